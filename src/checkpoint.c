#include "checkpoint.h"
#include "comm.h"
#include "h5io.h"
#include "log.h"
#include "rng.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { FORMAT_VERSION = 1 };
static const char *const FORMAT = "car-checkpoint";
static const char *const BUFFER_NAMES[3] = {"value", "m", "v"};

static float *arena_buffer(const ParamArena *a, int b) { return b == 0 ? a->params : b == 1 ? a->m : a->v; }

static int64_t bits_i64(uint64_t u) { int64_t i; memcpy(&i, &u, sizeof i); return i; }
static uint64_t bits_u64(int64_t i) { uint64_t u; memcpy(&u, &i, sizeof u); return u; }

/* ---------- agreeing on strings across ranks ---------- */

/* Every rank gets a copy of root's string (NULL stays NULL). */
static char *bcast_string(const char *s, int root) {
    int64_t n = s ? (int64_t)strlen(s) : -1;
    comm_bcast(&n, sizeof n, root);
    if (n < 0) return NULL;
    char *out = xmalloc((size_t)n + 1);
    if (comm_rank() == root) memcpy(out, s, (size_t)n);
    comm_bcast(out, n, root);
    out[n] = 0;
    return out;
}

/* ---------- which rows each rank writes and checksums ---------- */

/* blocks (n, P, 2): rows [lo, hi) of each tensor that each rank is responsible for. They cover
 * every row once: a tensor every rank holds whole is split evenly; otherwise a rank takes its
 * rows that no lower rank holds. NULL or the error (the same on every rank). */
static char *row_blocks(const ParamArena *a, const char *arena_name, int64_t **blocks_out) {
    int P = comm_size(), n = a->n;
    int64_t *mine = xmalloc(sizeof(int64_t) * (size_t)(4 * n + 1)), *all = xmalloc(sizeof(int64_t) * (size_t)(4 * n * P + 1));
    for (int i = 0; i < n; i++) {
        const ParamTensor *t = &a->t[i];
        mine[4 * i] = t->row0, mine[4 * i + 1] = t->rows, mine[4 * i + 2] = t->global_rows, mine[4 * i + 3] = t->cols;
    }
    comm_allgatherv_bytes(mine, 4 * n, all, sizeof(int64_t));
    int64_t *blk = xmalloc(sizeof(int64_t) * (size_t)(2 * n * P + 1));
    char *err = NULL;
    for (int i = 0; i < n && !err; i++) {
        const char *name = a->t[i].name;
        const int64_t *r0 = all + 4 * i; /* rank r's (row0, rows, global_rows, cols) at r0 + 4 n r */
        int same = 1;
        for (int r = 0; r < P; r++) {
            const int64_t *x = r0 + (size_t)4 * n * r;
            if (x[2] != r0[2] || x[3] != r0[3]) { err = xsprintf("tensor %s/%s: ranks disagree on its global shape", arena_name, name); break; }
            if (x[0] < 0 || x[1] < 0 || x[0] + x[1] > x[2]) {
                err = xsprintf("tensor %s/%s: rank %d holds rows %lld..%lld of %lld", arena_name, name, r, (long long)x[0],
                               (long long)(x[0] + x[1]), (long long)x[2]);
                break;
            }
            same = same && x[0] == r0[0] && x[1] == r0[1];
        }
        if (!err && strchr(name, '/')) err = xsprintf("tensor %s/%s: a tensor name cannot hold '/'", arena_name, name);
        int64_t covered = 0;
        for (int r = 0; r < P && !err; r++) {
            const int64_t *x = r0 + (size_t)4 * n * r;
            int64_t lo = x[0], hi = x[0] + x[1];
            if (same) {
                comm_split_range(x[1], P, r, &lo, &hi);
                lo += x[0], hi += x[0];
            } else {
                for (int q = 0; q < r && lo < hi; q++) { /* drop the rows lower ranks hold */
                    const int64_t *y = r0 + (size_t)4 * n * q;
                    int64_t a0 = y[0], a1 = y[0] + y[1];
                    if (a1 <= lo || a0 >= hi || a0 == a1) continue;
                    if (a0 <= lo) lo = a1 < hi ? a1 : hi;
                    else if (a1 >= hi) hi = a0;
                    else err = xsprintf("tensor %s/%s: rank %d's rows %lld..%lld lie inside rank %d's (an unsupported layout)",
                                        arena_name, name, q, (long long)a0, (long long)a1, r);
                }
            }
            if (hi < lo) hi = lo;
            blk[2 * ((size_t)i * P + r)] = lo, blk[2 * ((size_t)i * P + r) + 1] = hi;
            covered += hi - lo;
        }
        if (!err && covered != r0[2])
            err = xsprintf("tensor %s/%s: the ranks hold %lld of its %lld rows", arena_name, name, (long long)covered,
                           (long long)r0[2]);
    }
    free(mine); free(all);
    if (err) { free(blk); blk = NULL; }
    *blocks_out = blk;
    return err;
}

/* sums (n, 3): checksums of value, m, v of every tensor of a, over all ranks. */
static void arena_checksums(const ParamArena *a, const int64_t *blocks, int nb, uint64_t *sums) {
    int P = comm_size(), me = comm_rank();
    for (int i = 0; i < a->n; i++) {
        const ParamTensor *t = &a->t[i];
        int64_t lo = blocks[2 * ((size_t)i * P + me)], hi = blocks[2 * ((size_t)i * P + me) + 1];
        for (int b = 0; b < 3; b++)
            sums[3 * i + b] = b < nb ? hash_rows(arena_buffer(a, b) + t->offset + (lo - t->row0) * t->cols, lo, hi - lo, sizeof(float) * (size_t)t->cols) : 0;
    }
    if (P > 1) COMM_CHECK(MPI_Allreduce(MPI_IN_PLACE, sums, 3 * a->n, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
}

static char *dataset_name(const char *arena_name, const ParamTensor *t, int b) {
    return xsprintf("/%s/%s/%s", arena_name, t->name, BUFFER_NAMES[b]);
}

static void config_hash(const char *config, char out[17]) {
    out[0] = 0;
    if (config && *config) snprintf(out, 17, "%016llx", (unsigned long long)fnv1a64(FNV64_INIT, config, strlen(config)));
}

/* fsync so that a name renamed into place never points at data still in flight */
static void sync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---------- configuration ---------- */

char *checkpoint_config_text(const CarConfig *cfg) {
    static const char *const skipped[] = {"train.log_every", "train.grad_bucket_kib", "eval.batch_size"}; /* change nothing learned */
    char *full = config_to_string(cfg), *out = NULL, section[64] = "";
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    if (!f) comm_fatal("open_memstream failed");
    for (char *line = full, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t len = strlen(line);
        if (line[0] != ' ') { /* "section = {" or "};" */
            if (len > 4 && strcmp(line + len - 4, " = {") == 0) snprintf(section, sizeof section, "%.*s", (int)(len - 4), line);
            continue;
        }
        while (*line == ' ') line++;
        char key[160];
        snprintf(key, sizeof key, "%s.%.*s", section, (int)strcspn(line, " ="), line);
        int skip = strcmp(section, "run") == 0;
        for (size_t k = 0; k < sizeof skipped / sizeof *skipped; k++) skip = skip || strcmp(key, skipped[k]) == 0;
        if (!skip) fprintf(f, "%s.%s\n", section, line);
    }
    fclose(f);
    free(full);
    return out;
}

/* "X there, Y here" for the first line where the configurations differ */
static char *config_difference(const char *there, const char *here) {
    while (*there && *here) {
        size_t a = strcspn(there, "\n"), b = strcspn(here, "\n");
        if (a != b || strncmp(there, here, a) != 0)
            return xsprintf("'%.*s' there, '%.*s' here", (int)a, there, (int)b, here);
        there += a + (there[a] == '\n'), here += b + (here[b] == '\n');
    }
    if (*there) return xsprintf("'%.*s' there, absent here", (int)strcspn(there, "\n"), there);
    return xsprintf("absent there, '%.*s' here", (int)strcspn(here, "\n"), here);
}

/* ---------- writing ---------- */

char *checkpoint_path(const char *run_dir, int64_t step) {
    return xsprintf("%s/checkpoints/step_%08lld.h5", run_dir, (long long)step);
}

/* Buffers 0..nb-1 of every tensor of a: a tensor that every rank holds whole (replicated) from
 * rank 0 alone (many ranks splitting a small tensor cost more than its bytes), the others each
 * rank its rows of blocks. Collective. */
static void write_arena(hid_t f, const ParamArena *a, const char *arena_name, const int64_t *blocks, int nb) {
    int64_t *split = xmalloc(sizeof(int64_t) * (size_t)(a->n + 1)); /* ranks not holding tensor i whole */
    for (int i = 0; i < a->n; i++) split[i] = a->t[i].row0 != 0 || a->t[i].rows != a->t[i].global_rows;
    comm_sum_i64(split, a->n);
    for (int i = 0; i < a->n; i++) {
        const ParamTensor *t = &a->t[i];
        int64_t dims[2] = {t->global_rows, t->cols}, lo = blocks[2 * ((size_t)i * comm_size() + comm_rank())];
        int64_t hi = blocks[2 * ((size_t)i * comm_size() + comm_rank()) + 1];
        for (int b = 0; b < nb; b++) {
            char *name = dataset_name(arena_name, t, b);
            const float *x = arena_buffer(a, b) + t->offset;
            if (split[i] == 0) h5io_write_whole(f, name, H5T_NATIVE_FLOAT, 2, dims, x);
            else h5io_write_rows(f, name, H5T_NATIVE_FLOAT, 2, dims, lo, hi - lo, x + (lo - t->row0) * t->cols);
            free(name);
        }
    }
    free(split);
}

void checkpoint_write(const char *path, const CheckpointState *st, ParamArena *const *arenas,
                      const char *const *arena_names, int n_arenas, int moments) {
    int P = comm_size(), nb = moments ? 3 : 1;
    int64_t **blocks = xcalloc((size_t)n_arenas + 1, sizeof *blocks);
    for (int a = 0; a < n_arenas; a++) { /* check the layout before making any file */
        char *err = row_blocks(arenas[a], arena_names[a], &blocks[a]);
        if (err) comm_fail("%s: %s", path, err);
    }
    char *partial = h5io_partial_name(path), hash[17];
    comm_cleanup_add(partial);
    hid_t f = h5io_create(partial);
    config_hash(st->config, hash);
    h5io_attr_write_str(f, "/", "format", FORMAT);
    h5io_attr_write_i64(f, "/", "version", FORMAT_VERSION);
    h5io_attr_write_i64(f, "/", "moments", moments ? 1 : 0);
    h5io_attr_write_i64(f, "/", "step", st->step);
    h5io_attr_write_i64(f, "/", "epoch", st->epoch);
    h5io_attr_write_i64(f, "/", "step_in_epoch", st->step_in_epoch);
    h5io_attr_write_i64(f, "/", "seed", bits_i64(st->seed));
    h5io_attr_write_f64(f, "/", "best_score", st->best_score);
    h5io_attr_write_i64(f, "/", "best_epoch", st->best_epoch);
    h5io_attr_write_i64(f, "/", "best_step", st->best_step);
    h5io_attr_write_i64(f, "/", "bad_evals", st->bad_evals);
    h5io_attr_write_str(f, "/", "config", st->config ? st->config : "");
    h5io_attr_write_str(f, "/", "config_hash", hash);
    h5io_attr_write_i64(f, "/", "ranks", P);
    for (int a = 0; a < n_arenas; a++) write_arena(f, arenas[a], arena_names[a], blocks[a], nb);
    if (st->extra_json && *st->extra_json) {
        int64_t n = (int64_t)strlen(st->extra_json);
        h5io_write_rows(f, "/extra_json", H5T_NATIVE_UINT8, 1, &n, 0, comm_rank() == 0 ? n : 0, st->extra_json);
    }
    h5io_close(f);
    sync_path(partial);
    h5io_commit_partial(partial, path);
    for (int a = 0; a < n_arenas; a++) free(blocks[a]);
    free(blocks); free(partial);
}

/* step of a file name "step_<digits>.h5" (complete checkpoints only), else -1 */
static int64_t step_of_name(const char *name) {
    if (strncmp(name, "step_", 5) != 0 || !(name[5] >= '0' && name[5] <= '9')) return -1;
    char *end;
    long long s = strtoll(name + 5, &end, 10);
    return strcmp(end, ".h5") == 0 ? (int64_t)s : -1;
}

static int cmp_desc_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Rank 0: removes leftover partial files, checkpoints after step (an abandoned timeline) and all
 * but the newest keep and the best. */
static void prune(const char *dir, int64_t step, int64_t best_step, int keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    int64_t *steps = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        int64_t s = step_of_name(e->d_name);
        char *path = xsprintf("%s/%s", dir, e->d_name);
        if ((len > 8 && strcmp(e->d_name + len - 8, ".partial") == 0) || s > step) {
            if (unlink(path) != 0) log_warn("%s: cannot remove: %s", path, strerror(errno));
        } else if (s >= 0) {
            if (n == cap) steps = xrealloc(steps, sizeof(int64_t) * (size_t)(cap = cap ? 2 * cap : 16));
            steps[n++] = s;
        }
        free(path);
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof(int64_t), cmp_desc_i64);
    for (int k = keep; k < n; k++) {
        if (steps[k] == best_step) continue;
        char *path = xsprintf("%s/step_%08lld.h5", dir, (long long)steps[k]);
        if (unlink(path) != 0) log_warn("%s: cannot remove: %s", path, strerror(errno));
        free(path);
    }
    free(steps);
}

void checkpoint_save(const char *run_dir, const CheckpointState *st, ParamArena *const *arenas,
                     const char *const *arena_names, int n_arenas, int keep) {
    double t0 = comm_wtime();
    char *dir = xsprintf("%s/checkpoints", run_dir), *path = checkpoint_path(run_dir, st->step);
    int err = 0;
    if (comm_rank() == 0 && make_dirs(dir) != 0) err = errno;
    comm_bcast(&err, sizeof err, 0);
    if (err) comm_fail("%s: cannot create the checkpoint directory: %s", dir, strerror(err));
    checkpoint_write(path, st, arenas, arena_names, n_arenas, 1);
    char *latest = xsprintf("%s/latest", dir);
    if (comm_rank() == 0) {
        char *line = xsprintf("%s\n", strrchr(path, '/') + 1);
        if (write_file_atomic(latest, line) != 0) err = errno ? errno : EIO;
        else sync_path(dir);
        free(line);
    }
    comm_bcast(&err, sizeof err, 0);
    if (err) comm_fail("%s: cannot write: %s", latest, strerror(err));
    if (comm_rank() == 0) prune(dir, st->step, st->best_step, keep < 1 ? 1 : keep);
    double mib = 0;
    for (int a = 0; a < n_arenas; a++)
        for (int i = 0; i < arenas[a]->n; i++) mib += 3.0 * 4 * (double)(arenas[a]->t[i].global_rows * arenas[a]->t[i].cols);
    log_info("checkpoint %s: %.1f MiB in %.2fs", path, mib / (1 << 20), comm_wtime() - t0);
    free(dir); free(path); free(latest);
}

/* ---------- finding ---------- */

static char *latest_local(const char *run_dir) {
    char *dir = xsprintf("%s/checkpoints", run_dir), *latest = xsprintf("%s/latest", dir), *found = NULL;
    FILE *f = fopen(latest, "r");
    char line[256] = "";
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
    }
    if (step_of_name(line) >= 0) {
        found = xsprintf("%s/%s", dir, line);
        if (!file_exists(found)) { free(found); found = NULL; }
    }
    if (!found) { /* latest lost (or never written): the newest complete file is as good */
        int64_t best = -1;
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            int64_t s = step_of_name(e->d_name);
            if (s > best) best = s;
        }
        if (d) closedir(d);
        if (best >= 0) {
            found = checkpoint_path(run_dir, best);
            log_warn("%s %s; using %s", latest, f ? "names no checkpoint file" : "is missing", found);
        }
    }
    free(dir); free(latest);
    return found;
}

char *checkpoint_latest(const char *run_dir) {
    char *mine = comm_rank() == 0 ? latest_local(run_dir) : NULL, *all = bcast_string(mine, 0);
    free(mine);
    return all;
}

char *checkpoint_best(const char *run_dir) {
    char *latest = checkpoint_latest(run_dir), *best = NULL;
    if (!latest) return NULL;
    hid_t f = h5io_open(latest, H5IO_UNVERIFIED); /* one attribute */
    int64_t best_step = -1;
    h5io_attr_read_i64(f, "/", "best_step", &best_step);
    h5io_close(f);
    if (best_step >= 0) {
        best = checkpoint_path(run_dir, best_step);
        int ok = comm_rank() == 0 ? file_exists(best) : 0;
        comm_bcast(&ok, sizeof ok, 0);
        if (!ok) { free(best); best = NULL; }
    }
    free(latest);
    return best;
}

/* ---------- checking and loading ---------- */

/* HDF5's error stack walker: the end of file a truncated file's superblock records */
static herr_t stored_eof(unsigned n, const H5E_error2_t *e, void *out) {
    (void)n;
    const char *p = e->desc ? strstr(e->desc, "stored_eof = ") : NULL;
    if (p) *(long long *)out = atoll(p + 13);
    return 0;
}

/* Collective open that reports instead of failing; -1 and *err on failure. */
static hid_t open_quietly(const char *path, char **err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char *mine = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) mine = xsprintf("checkpoint %s: no such file", path);
    if ((*err = comm_agree_error(mine))) return -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    long long want = -1;
    if (f < 0) H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, stored_eof, &want); /* before the next call clears it */
    H5Pclose(fapl);
    mine = f >= 0 ? NULL
           : want > (long long)sb.st_size
               ? xsprintf("checkpoint %s: truncated file (%lld of %lld bytes)", path, (long long)sb.st_size, want)
               : xsprintf("checkpoint %s: cannot open as HDF5 (corrupt or not an HDF5 file)", path);
    if ((*err = comm_agree_error(mine))) {
        if (f >= 0) H5Fclose(f);
        return -1;
    }
    return f;
}

/* The first tensor of the file's group /arena_name that a lacks, or NULL. */
static char *extra_tensor(hid_t f, const ParamArena *a, const char *arena_name) {
    char group[128];
    snprintf(group, sizeof group, "/%s", arena_name);
    H5G_info_t info;
    if (H5Gget_info_by_name(f, group, &info, H5P_DEFAULT) < 0) return NULL;
    for (hsize_t k = 0; k < info.nlinks; k++) {
        char name[256] = "";
        if (H5Lget_name_by_idx(f, group, H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT) < 0) continue;
        if (arena_find(a, name) < 0) return xstrdup(name);
    }
    return NULL;
}

/* Checks of an open file, the same on every rank (metadata only). */
static char *check_file(hid_t f, const char *path, const char *config, ParamArena *const *arenas,
                        const char *const *arena_names, int n_arenas) {
    char *format = h5io_attr_read_str(f, "/", "format");
    int ok = format && strcmp(format, FORMAT) == 0;
    free(format);
    if (!ok) return xsprintf("checkpoint %s: not a CAR checkpoint (no attribute format = \"%s\")", path, FORMAT);
    int64_t version = 0, moments = 1;
    if (!h5io_attr_read_i64(f, "/", "version", &version) || version != FORMAT_VERSION)
        return xsprintf("checkpoint %s: format version %lld, this program reads version %d", path, (long long)version,
                        FORMAT_VERSION);
    h5io_attr_read_i64(f, "/", "moments", &moments);
    for (int a = 0; a < n_arenas; a++) {
        const ParamArena *ar = arenas[a];
        for (int i = 0; i < ar->n; i++) {
            const ParamTensor *t = &ar->t[i];
            for (int b = 0; b < (moments ? 3 : 1); b++) {
                char *name = dataset_name(arena_names[a], t, b), *err = NULL;
                int64_t dims[8] = {0};
                if (!h5io_has(f, name))
                    err = b == 0 ? xsprintf("checkpoint %s: tensor %s/%s is missing; this model has it (%lld x %lld) — different model shape?",
                                            path, arena_names[a], t->name, (long long)t->global_rows, (long long)t->cols)
                                 : xsprintf("checkpoint %s: tensor %s/%s has no AdamW moment %s (corrupt file?)", path,
                                            arena_names[a], t->name, BUFFER_NAMES[b]);
                else if (h5io_shape(f, name, dims, 8) != 2 || dims[0] != t->global_rows || dims[1] != t->cols)
                    err = xsprintf("checkpoint %s: tensor %s/%s is %lld x %lld, this model has %lld x %lld — different model shape?",
                                   path, arena_names[a], t->name, (long long)dims[0], (long long)dims[1],
                                   (long long)t->global_rows, (long long)t->cols);
                free(name);
                if (err) return err;
            }
        }
        char *extra = extra_tensor(f, ar, arena_names[a]);
        if (extra) {
            char *err = xsprintf("checkpoint %s: tensor %s/%s is not in this model — different model shape?", path,
                                 arena_names[a], extra);
            free(extra);
            return err;
        }
    }
    char *recorded = config ? h5io_attr_read_str(f, "/", "config") : NULL, *err = NULL;
    if (recorded && *recorded && strcmp(recorded, config) != 0) {
        char *diff = config_difference(recorded, config);
        err = xsprintf("checkpoint %s was made with another configuration: %s (resume with the configuration it was "
                       "made with, or start a new run.dir)", path, diff);
        free(diff);
    }
    free(recorded);
    return err;
}

char *checkpoint_check(const char *path, const char *config, ParamArena *const *arenas,
                       const char *const *arena_names, int n_arenas) {
    char *err = NULL;
    hid_t f = open_quietly(path, &err);
    if (f < 0) return err;
    err = check_file(f, path, config, arenas, arena_names, n_arenas);
    H5Fclose(f);
    return comm_agree_error(err);
}

static char *read_state(hid_t f, const char *path, CheckpointState *st) {
    static const char *const keys[] = {"step", "epoch", "step_in_epoch", "seed", "best_epoch", "best_step", "bad_evals", "ranks"};
    int64_t v[8];
    for (int k = 0; k < 8; k++)
        if (!h5io_attr_read_i64(f, "/", keys[k], &v[k])) return xsprintf("checkpoint %s: attribute %s is missing", path, keys[k]);
    if (!h5io_attr_read_f64(f, "/", "best_score", &st->best_score))
        return xsprintf("checkpoint %s: attribute best_score is missing", path);
    st->step = v[0], st->epoch = (int)v[1], st->step_in_epoch = v[2], st->seed = bits_u64(v[3]);
    st->best_epoch = (int)v[4], st->best_step = v[5], st->bad_evals = (int)v[6], st->ranks = (int)v[7];
    char *hash = h5io_attr_read_str(f, "/", "config_hash");
    snprintf(st->config_hash, sizeof st->config_hash, "%s", hash ? hash : "");
    free(hash);
    st->extra_json = NULL;
    if (h5io_has(f, "/extra_json")) {
        int64_t n = 0;
        h5io_shape(f, "/extra_json", &n, 1);
        st->extra_json = xcalloc((size_t)n + 1, 1);
        h5io_read_all(f, "/extra_json", H5T_NATIVE_UINT8, st->extra_json);
    }
    return NULL;
}

char *checkpoint_try_load(const char *path, CheckpointState *st, ParamArena *const *arenas,
                          const char *const *arena_names, int n_arenas) {
    char *err = checkpoint_check(path, st->config, arenas, arena_names, n_arenas);
    if (err) return err;
    hid_t f = h5io_open(path, H5IO_UNVERIFIED); /* checked below, reporting instead of failing */
    int64_t moments = 1;
    h5io_attr_read_i64(f, "/", "moments", &moments);
    int nb = moments ? 3 : 1;
    err = read_state(f, path, st);
    for (int a = 0; a < n_arenas && !err; a++) {
        const ParamArena *ar = arenas[a];
        int64_t *blocks = NULL;
        char *lerr = row_blocks(ar, arena_names[a], &blocks);
        if (lerr) {
            err = xsprintf("checkpoint %s: cannot load into this layout: %s", path, lerr);
            free(lerr);
            break;
        }
        uint64_t *want = xmalloc(sizeof(uint64_t) * (size_t)(3 * ar->n + 1)), *got = xmalloc(sizeof(uint64_t) * (size_t)(3 * ar->n + 1));
        for (int i = 0; i < ar->n; i++) {
            const ParamTensor *t = &ar->t[i];
            for (int b = 0; b < 3; b++) {
                want[3 * i + b] = 0;
                if (b >= nb) continue;
                char *name = dataset_name(arena_names[a], t, b);
                int64_t sum = 0;
                h5io_read_rows(f, name, H5T_NATIVE_FLOAT, t->row0, t->rows, arena_buffer(ar, b) + t->offset);
                h5io_attr_read_i64(f, name, "checksum", &sum);
                want[3 * i + b] = bits_u64(sum);
                free(name);
            }
        }
        arena_checksums(ar, blocks, nb, got);
        for (int k = 0; k < 3 * ar->n && !err; k++)
            if (got[k] != want[k])
                err = xsprintf("checkpoint %s: tensor %s/%s (%s) does not match its checksum: corrupt file", path,
                               arena_names[a], ar->t[k / 3].name, BUFFER_NAMES[k % 3]);
        free(blocks); free(want); free(got);
    }
    if (!err) err = h5io_verify(f, "/extra_json"); /* the tensors were checked above */
    h5io_close(f);
    return err; /* every rank saw the same (attributes and reduced checksums) */
}

void checkpoint_load(const char *path, CheckpointState *st, ParamArena *const *arenas,
                     const char *const *arena_names, int n_arenas) {
    double t0 = comm_wtime();
    char *err = checkpoint_try_load(path, st, arenas, arena_names, n_arenas);
    if (err) comm_fail("%s", err);
    log_info("checkpoint %s: loaded step %lld (epoch %d, written by %d rank%s) in %.2fs", path, (long long)st->step,
             st->epoch, st->ranks, st->ranks == 1 ? "" : "s", comm_wtime() - t0);
}
