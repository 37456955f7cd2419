/* input: raw sequences and items are parsed exactly, and every bad input names file and line. */
#include "check.h"
#include "input.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static const char *items_ok =
    "{\"item_id\": 2, \"text\": \"Title: B\", \"categories\": [\"Beauty\", \"Nails\"]}\n"
    "\n"
    "{\"item_id\": 1, \"text\": \"Title: A \\u00e9\", \"categories\": []}\n"
    "{\"item_id\": 3, \"text\": \"Title: C\"}\n";

static void test_items_parse(void) {
    char *p = check_tmp_file(items_ok);
    ItemTable t;
    char *err = input_read_items(p, &t);
    CHECK_MSG(err == NULL, "%s", err);
    CHECK(t.n_items == 3);
    CHECK(strcmp(t.texts[0], "Title: A \xc3\xa9") == 0 && strcmp(t.texts[1], "Title: B") == 0);
    CHECK(t.leaf[1] && strcmp(t.leaf[1], "Nails") == 0 && t.leaf[0] == NULL && t.leaf[2] == NULL);
    item_table_free(&t);
    unlink(p);
    free(p);
}

/* Fields as text: strings as they are, arrays joined (nested flattened), numbers as price bands,
 * null and absent NULL. */
static void test_item_fields(void) {
    char *p = check_tmp_file("{\"item_id\": 1, \"text\": \"t\", \"title\": \"Red Nail\", \"price\": 12.0, "
                             "\"category_paths\": [[\"Beauty\", \"Nails\"], [\"Gift\"]], \"brand\": null}\n"
                             "{\"item_id\": 2, \"text\": \"u\", \"price\": 0.7, \"title\": [\"\", \"x\"]}\n");
    const char *names[] = {"title", "price", "category_paths", "brand"};
    ItemTable t;
    char *err = input_read_items_fields(p, names, 4, &t);
    CHECK_MSG(err == NULL, "%s", err);
    CHECK(t.n_fields == 4 && t.n_items == 2);
    if (!err) {
        char **f = t.fields;
        CHECK(f[0] && strcmp(f[0], "Red Nail") == 0);
        CHECK(f[1] && strcmp(f[1], "price band 3") == 0); /* floor(log2 12) */
        CHECK(f[2] && strcmp(f[2], "Beauty, Nails, Gift") == 0);
        CHECK(f[3] == NULL);
        CHECK(f[4] && strcmp(f[4], "x") == 0); /* a blank element is skipped */
        CHECK(f[5] && strcmp(f[5], "price band -1") == 0);
        CHECK(f[6] == NULL && f[7] == NULL); /* absent */
        CHECK(strcmp(t.texts[1], "u") == 0);
    }
    item_table_free(&t);
    unlink(p);
    free(p);
}

static void items_error(const char *text, const char *needle) {
    char *p = check_tmp_file(text);
    ItemTable t;
    char *err = input_read_items(p, &t);
    CHECK_MSG(err && strstr(err, needle) && strstr(err, p), "for %s: got '%s', want '%s'", text, err ? err : "(none)", needle);
    free(err);
    unlink(p);
    free(p);
}

static void test_items_errors(void) {
    items_error("{\"item_id\": 1, \"text\": \"a\"}\n{\"item_id\": 2}\n", ":2: item 2 has no text");
    items_error("{\"item_id\": 1, \"text\": \"  \"}\n", ":1: item 1 has no text");
    items_error("{\"item_id\": 1, \"text\": \"a\"}\n{\"item_id\": 3, \"text\": \"c\"}\n", "item 2 has no record");
    items_error("{\"item_id\": 1, \"text\": \"a\"}\n{\"item_id\": 1, \"text\": \"b\"}\n", ":2: item_id 1 repeats the record of line 1");
    items_error("{\"item_id\": 1, \"text\": \"a\"\n", ":1: invalid JSON");
    /* jansson quotes the bad token with its newline: the message must stay one line (found by fuzzing) */
    items_error("{\"item_id\": 1, \"text\": \"\\u00e\n", ":1: invalid JSON: invalid escape near '\"\\u00e?'");
    items_error("{\"item_id\": \"x\", \"text\": \"a\"}\n", ":1: missing or non-integer \"item_id\"");
    items_error("{\"item_id\": 0, \"text\": \"a\"}\n", ":1: item_id 0 out of range");
    items_error("", "no items");
    /* a repeat is reported before a later bad line, and a triple names its first repeat */
    items_error("{\"item_id\": 2, \"text\": \"a\"}\n{\"item_id\": 2, \"text\": \"b\"}\n{\"item_id\": 2, \"text\": \"c\"}\nx\n",
                ":2: item_id 2 repeats the record of line 1");
    ItemTable t;
    char *err = input_read_items("/nonexistent/items.jsonl", &t);
    CHECK(err && strstr(err, "/nonexistent/items.jsonl: cannot open items file"));
    free(err);
}

/* The table grows with the records, not with the largest id: one line naming item 10^7 used to
 * allocate (and clear) three arrays of 2^24 entries, 400 MB (at 10^8, 3 GB; found by fuzzing). */
static void test_items_sparse_id_memory(void) {
    int64_t before = peak_rss_kib();
    items_error("{\"item_id\": 10000000, \"text\": \"a\"}\n", "item 1 has no record (item ids must run 1..10000000)");
    int64_t grown = peak_rss_kib() - before;
    CHECK_MSG(grown < 64 * 1024, "reading one record raised the peak resident set by %lld KiB", (long long)grown);
}

/* A NUL byte hid the rest of its line (read as a C string): an error, not silently less data. */
static void test_nul_bytes(void) {
    static const char items[] = "{\"item_id\": 1, \"text\": \"a\"}\0{\"item_id\": 2, \"text\": \"b\"}\n";
    static const char seqs[] = "1 1\n2 1 2\0 x y\n";
    char path[] = "/tmp/car_test_nul_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, items, sizeof items - 1) == (ssize_t)(sizeof items - 1));
    ItemTable t;
    char *err = input_read_items(path, &t);
    CHECK_MSG(err && strstr(err, ":1: NUL byte in the line"), "got '%s'", err ? err : "(none)");
    free(err);
    CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, seqs, sizeof seqs - 1, 0) == (ssize_t)(sizeof seqs - 1));
    Sequences q;
    err = input_read_sequences(path, 5, "items.jsonl", &q);
    CHECK_MSG(err && strstr(err, ":2: NUL byte in the line"), "got '%s'", err ? err : "(none)");
    free(err);
    close(fd);
    unlink(path);
}

static void test_sequences_parse(void) {
    char *p = check_tmp_file("7 1 2 3\n\n9 3 3 1 2\r\n");
    Sequences s;
    char *err = input_read_sequences(p, 3, "items", &s);
    CHECK_MSG(err == NULL, "%s", err);
    CHECK(s.n_users == 2 && s.n_interactions == 7);
    CHECK(s.user_ids[0] == 7 && s.user_ids[1] == 9);
    CHECK(s.offsets[0] == 0 && s.offsets[1] == 3 && s.offsets[2] == 7);
    int32_t want[] = {0, 1, 2, 2, 2, 0, 1};
    CHECK(memcmp(s.items, want, sizeof want) == 0);
    sequences_free(&s);
    unlink(p);
    free(p);
}

static void seq_error(const char *text, const char *needle) {
    char *p = check_tmp_file(text);
    Sequences s;
    char *err = input_read_sequences(p, 5, "items.jsonl", &s);
    CHECK_MSG(err && strstr(err, needle) && strstr(err, p), "for %s: got '%s', want '%s'", text, err ? err : "(none)", needle);
    free(err);
    unlink(p);
    free(p);
}

static void test_sequences_errors(void) {
    seq_error("1 1 2\n2 1 x3\n", ":2: 'x3' is not a number");
    seq_error("1 1 2\nabc 1 2\n", ":2: 'abc' is not a number");
    seq_error("1 1 2 6\n", ":1: item id 6 out of range 1..5 (the items of items.jsonl)");
    seq_error("1 1 0\n", ":1: item id 0 out of range");
    seq_error("1 1\n2\n", ":2: user 2 has no items");
    seq_error("1 1 2.5\n", ":1: '2.5' is not a number");
    seq_error("\n\n", "no users");
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_input");
    RUN_TEST(test_items_parse);
    RUN_TEST(test_item_fields);
    RUN_TEST(test_items_errors);
    RUN_TEST(test_items_sparse_id_memory);
    RUN_TEST(test_nul_bytes);
    RUN_TEST(test_sequences_parse);
    RUN_TEST(test_sequences_errors);
    return check_finish();
}
