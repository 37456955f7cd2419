/* config: defaults, file values, overrides, and an error for every kind of bad input. */
#include "check.h"
#include "config.h"
#include <stdlib.h>
#include <string.h>

static char *parse(const char *text, int n_ov, char **ov, CarConfig *cfg) {
    char *path = check_tmp_file(text);
    char *err = config_parse(cfg, path, n_ov, ov);
    unlink(path);
    free(path);
    return err;
}

static void expect_error(const char *text, int n_ov, char **ov, const char *needle, const char *needle2) {
    CarConfig cfg;
    char *err = parse(text, n_ov, ov, &cfg);
    CHECK_MSG(err != NULL, "no error for: %s", text);
    if (err) {
        CHECK_MSG(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
        if (needle2) CHECK_MSG(strstr(err, needle2) != NULL, "error '%s' lacks '%s'", err, needle2);
        CHECK_MSG(strchr(err, '\n') == NULL, "error is not one line: %s", err);
    }
    free(err);
    config_free(&cfg);
}

static void test_defaults_and_values(void) {
    CarConfig cfg;
    char *err = parse("sid = { levels = 2; codebook = [16, 8]; tol = 1; };\nmodel = { fusion = \"mean\"; };\n", 0, NULL, &cfg);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    CHECK(cfg.sid.levels == 2);
    CHECK(config_codebook(&cfg, 0) == 16 && config_codebook(&cfg, 1) == 8);
    CHECK(cfg.sid.tol == 1.0); /* an integer is accepted for a float key */
    CHECK(cfg.model.fusion == FUSION_MEAN);
    CHECK(cfg.data.max_history == 20);
    CHECK(config_has_stage(&cfg, "sid") && config_has_stage(&cfg, "eval") && !config_has_stage(&cfg, "si"));
    config_free(&cfg);
}

static void test_overrides(void) {
    CarConfig cfg;
    char *ov[] = {"sid.levels=4", "run.stages=sid", "train.lr=0.5", "sid.codebook=[32,16,8,4]", "model.tie_uid=true",
                  "run.dir=\"/tmp/x y\""};
    char *err = parse("sid = { levels = 2; };\n", 6, ov, &cfg);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    CHECK(cfg.sid.levels == 4 && cfg.sid.codebook.n == 4 && cfg.sid.codebook.v[3] == 4);
    CHECK(config_has_stage(&cfg, "sid") && !config_has_stage(&cfg, "train"));
    CHECK(cfg.train.lr == 0.5 && cfg.model.tie_uid == 1);
    CHECK(strcmp(cfg.run.dir, "/tmp/x y") == 0);
    config_free(&cfg);
}

static void test_roundtrip(void) {
    CarConfig a, b;
    char *ov[] = {"train.alpha=0.25", "model.fusion=none", "sid.codebook=[7,9]", "sid.levels=2", "run.dir=a\"b",
                  "train.seed=123456789012"}; /* beyond 32 bits: printed with libconfig's L suffix (found by fuzzing) */
    char *err = parse("", 6, ov, &a);
    CHECK(err == NULL);
    char *text = config_to_string(&a);
    err = parse(text, 0, NULL, &b);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    char *text2 = config_to_string(&b);
    CHECK_MSG(strcmp(text, text2) == 0, "effective config does not round-trip:\n%s\n---\n%s", text, text2);
    CHECK(b.train.alpha == 0.25 && b.model.fusion == FUSION_NONE && strcmp(b.run.dir, "a\"b") == 0);
    CHECK(b.train.seed == 123456789012LL);
    free(text);
    free(text2);
    config_free(&a);
    config_free(&b);
}

static void test_errors(void) {
    expect_error("sid = {\n levels = 3;\n codebok = 5; };\n", 0, NULL, ":3: unknown key 'sid.codebok'", NULL);
    expect_error("sids = { levels = 3; };\n", 0, NULL, ":1: unknown section 'sids'", NULL);
    expect_error("\n\nsid = { levels = \"three\"; };\n", 0, NULL, ":3: key 'sid.levels' must be an integer", NULL);
    expect_error("sid = { levels = 9; };\n", 0, NULL, "key 'sid.levels' = 9 is out of range [0, 8]", ":1:");
    expect_error("model = { fusion = \"avg\"; };\n", 0, NULL, "is not one of sum|mean|none", NULL);
    expect_error("train = { lr = -1.0; };\n", 0, NULL, "'train.lr' = -1 is out of range", NULL);
    expect_error("sid = { levels = = 3; };\n", 0, NULL, ":1: syntax error", NULL);
    expect_error("sid = { levels = 3; codebook = [4, 4]; };\n", 0, NULL, "has 2 sizes but sid.levels = 3", NULL);
    /* 2^32 + 256 must not wrap to a valid 256 */
    expect_error("sid = { codebook = [4294967552L]; };\n", 0, NULL, "'sid.codebook' = 4.29497e+09 is out of range", NULL);
    expect_error("sid = { codebook = 4294967552L; };\n", 0, NULL, "'sid.codebook' = 4.29497e+09 is out of range", NULL);
    expect_error("model = { d_model = 30; n_heads = 4; };\n", 0, NULL, "not a multiple", NULL);
    expect_error("run = { stages = \"sid,trian\"; };\n", 0, NULL, "unknown stage 'trian'", NULL);
    char *o1[] = {"sid.levls=2"};
    expect_error("", 1, o1, "-o sid.levls=2: unknown key 'sid.levls'", NULL);
    char *o2[] = {"sid.levels=x"};
    expect_error("", 1, o2, "-o sid.levels=x", "is not an integer");
    char *o3[] = {"levels=2"};
    expect_error("", 1, o3, "expected section.key=value", NULL);
    CarConfig cfg;
    char *err = config_parse(&cfg, "/nonexistent/car.cfg", 0, NULL);
    CHECK(err && strstr(err, "/nonexistent/car.cfg: no such config file"));
    free(err);
    config_free(&cfg);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_config");
    RUN_TEST(test_defaults_and_values);
    RUN_TEST(test_overrides);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_errors);
    return check_finish();
}
