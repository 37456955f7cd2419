/* The harness itself: NaN and infinity fail every numeric check (fmax would have dropped
 * them: the old check_rel_diff passed a NaN result), skipped tests are counted apart. */
#include "check.h"

static void test_rel_diff_nan(void) {
    float b[4] = {1, 2, 3, 4}, a[4] = {1, 2, 3, 4};
    CHECK(check_rel_diff(a, b, 4, 0) == 0);
    a[2] = NAN;
    CHECK(!(check_rel_diff(a, b, 4, 0) <= 1e-3));
    CHECK(!(check_rel_diff(b, a, 4, 0) <= 1e-3)); /* NaN in the reference too */
    a[2] = INFINITY;
    CHECK(!(check_rel_diff(a, b, 4, 1) <= 1e-3));
    CHECK(check_nan_detected(b, b, 4, 0, 1e-6));
}

static void test_max_nan(void) {
    CHECK(check_max(1, 2) == 2 && check_max(2, 1) == 2);
    CHECK(isinf(check_max(1, NAN)) && isinf(check_max(NAN, 1)));
    CHECK(isinf(check_max(check_max(0, NAN), 5))); /* stays failed once NaN was seen */
}

static void test_close_nan(void) {
    double nan = NAN, one = 1;
    int saved = check_failed_now;
    CHECK_CLOSE(nan, one, 1e-3);
    int caught = check_failed_now;
    check_failed_now = 0;
    CHECK_CLOSE(one, nan, 1e-3);
    caught &= check_failed_now;
    check_failed_now = saved;
    CHECK(caught);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_check");
    RUN_TEST(test_rel_diff_nan);
    RUN_TEST(test_max_nan);
    RUN_TEST(test_close_nan);
    return check_finish();
}
