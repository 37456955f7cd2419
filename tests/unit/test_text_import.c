/* text import: the .npy header check accepts what numpy writes and names every defect;
 * text_l2_normalize. (Error exits of text_import_embeddings itself are CLI tests.) */
#include "check.h"
#include "text.h"
#include <stdlib.h>
#include <string.h>

/* A .npy prefix: magic, version, header length, dict padded to 64 bytes. Returns its size. */
static size_t npy_header(unsigned char *buf, int major, const char *dict) {
    size_t pre = major == 1 ? 10 : 12, len = strlen(dict);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    memcpy(buf + pre, dict, len);
    while ((pre + len + 1) % 64) buf[pre + len++] = ' ';
    buf[pre + len++] = '\n';
    buf[8] = (unsigned char)(len & 255);
    buf[9] = (unsigned char)(len >> 8);
    if (major != 1) buf[10] = buf[11] = 0;
    return pre + len;
}

/* Parses dict (version major) for a file of header + extra bytes; returns the error or NULL. */
static char *parse(int major, const char *dict, int64_t data_bytes, NpyHeader *h) {
    unsigned char buf[1024];
    size_t n = npy_header(buf, major, dict);
    return text_npy_parse_header(buf, n, (int64_t)n + data_bytes, h);
}

static void expect_error(int major, const char *dict, int64_t data_bytes, const char *needle) {
    NpyHeader h;
    char *err = parse(major, dict, data_bytes, &h);
    CHECK_MSG(err != NULL, "no error for %s", dict);
    if (err) {
        CHECK_MSG(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
        CHECK_MSG(strchr(err, '\n') == NULL, "error is not one line: %s", err);
    }
    free(err);
}

static void test_npy_valid(void) {
    NpyHeader h;
    char *err = parse(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (12101, 128), }", 12101LL * 128 * 4, &h);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    CHECK(h.rows == 12101 && h.cols == 128 && h.elem_size == 4 && h.data_offset == 128);
    free(err);
    err = parse(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2)}", 48, &h);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    CHECK(h.rows == 3 && h.cols == 2 && h.elem_size == 8 && h.data_offset == 128);
    free(err);
    /* numpy's keys may come in another order; trailing bytes after the data are tolerated */
    err = parse(1, "{'shape': (4,3), 'fortran_order': False, 'descr': '<f4'}", 4 * 3 * 4 + 7, &h);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    CHECK(h.rows == 4 && h.cols == 3);
    free(err);
    /* zero rows is a valid shape (the item count check is the caller's) */
    err = parse(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 8), }", 0, &h);
    CHECK(err == NULL && h.rows == 0 && h.cols == 8);
    free(err);
}

static void test_npy_errors(void) {
    expect_error(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }", 24, "Fortran");
    expect_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2), }", 48, "3-D");
    expect_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 24, "1-D");
    expect_error(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }", 24, "'>f4'");
    expect_error(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 2), }", 24, "'<i4'");
    expect_error(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", 12, "float32");
    expect_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 23, "truncated .npy data");
    expect_error(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", 24, "needs");
    expect_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0), }", 0, "dim");
    expect_error(1, "{'descr': '<f4', 'shape': (3, 2), }", 24, "malformed");
    expect_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, x), }", 24, "shape");
    expect_error(4, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 24, "version 4");

    NpyHeader h;
    unsigned char buf[256];
    size_t n = npy_header(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }");
    char *err = text_npy_parse_header(buf, 40, 40, &h); /* file cut inside the header */
    CHECK(err && strstr(err, "truncated .npy header"));
    free(err);
    buf[0] = 'x';
    err = text_npy_parse_header(buf, n, (int64_t)n + 24, &h);
    CHECK(err && strstr(err, "magic"));
    free(err);
    err = text_npy_parse_header((const unsigned char *)"\x93NUM", 4, 4, &h);
    CHECK(err != NULL);
    free(err);
}

static void test_l2_normalize(void) {
    float x[3 * 4] = {3, 4, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    text_l2_normalize(x, 3, 4);
    CHECK_CLOSE(x[0], 0.6, 1e-7);
    CHECK_CLOSE(x[1], 0.8, 1e-7);
    for (int k = 4; k < 8; k++) CHECK(x[k] == 0);
    for (int k = 8; k < 12; k++) CHECK_CLOSE(x[k], 0.5, 1e-7);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_text_import");
    RUN_TEST(test_npy_valid);
    RUN_TEST(test_npy_errors);
    RUN_TEST(test_l2_normalize);
    return check_finish();
}
