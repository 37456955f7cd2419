/* comm_blas_threads: the BLAS threads of one rank from its affinity mask, the ranks sharing it
 * and the environment (issue 9, defect 6: a rank that Slurm pinned to 8 CPUs of its own got
 * 8 / 8 ranks-on-node = 1 thread). */
#include "check.h"
#include "util.h"

static int threads(const char *openblas, const char *slurm, int mask, int node, int sharing, const char *why_want) {
    char why[128] = "";
    int t = comm_blas_threads(openblas, slurm, mask, node, sharing, why, sizeof why);
    CHECK_MSG(strcmp(why, why_want) == 0, "mask %d node %d sharing %d: why '%s', want '%s'", mask, node, sharing, why, why_want);
    return t;
}

static void test_pinned(void) {
    /* 8 ranks on a 64-CPU node, each pinned to 8 CPUs of its own: 8 threads each */
    CHECK(threads(NULL, NULL, 8, 64, 1, "affinity mask of 8 CPUs") == 8);
    CHECK(threads(NULL, NULL, 1, 64, 1, "affinity mask of 1 CPU") == 1);
    /* two ranks bound to the same socket of 16 CPUs share it */
    CHECK(threads(NULL, NULL, 16, 64, 2, "affinity mask of 16 CPUs shared by 2 ranks") == 8);
}

static void test_unpinned(void) {
    /* masks that span the node: the node's CPUs are divided among its ranks */
    CHECK(threads(NULL, NULL, 64, 64, 8, "all 64 CPUs of the node shared by 8 ranks") == 8);
    CHECK(threads(NULL, NULL, 2, 2, 1, "all 2 CPUs of the node") == 2);
    CHECK(threads(NULL, NULL, 2, 2, 64, "all 2 CPUs of the node shared by 64 ranks") == 1); /* never 0 */
    CHECK(threads(NULL, NULL, 0, 4, 1, "all 4 CPUs of the node") == 4);                     /* mask unknown */
}

static void test_environment(void) {
    /* the user's OPENBLAS_NUM_THREADS wins over everything, then Slurm's CPUs per task */
    CHECK(threads("3", "8", 8, 64, 1, "OPENBLAS_NUM_THREADS=3") == 3);
    CHECK(threads(NULL, "8", 64, 64, 8, "SLURM_CPUS_PER_TASK=8") == 8);
    /* invalid values count as unset */
    CHECK(threads("", "x", 8, 64, 1, "affinity mask of 8 CPUs") == 8);
    CHECK(threads("0", "-2", 64, 64, 8, "all 64 CPUs of the node shared by 8 ranks") == 8);
    CHECK(threads("4x", NULL, 2, 2, 2, "all 2 CPUs of the node shared by 2 ranks") == 1);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_blas_threads");
    RUN_TEST(test_pinned);
    RUN_TEST(test_unpinned);
    RUN_TEST(test_environment);
    return check_finish();
}
