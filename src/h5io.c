#include "h5io.h"
#include "comm.h"
#include "log.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char file_label[64][512]; /* the path of each open file, by a small hash of its id */
/* Attribute of every dataset written through h5io_write_rows (and of string arrays): the sum of
 * hash_row over its rows (row index, row bytes), so that any split of the rows over the writing
 * or checking ranks gives the same value. HDF5 notices truncation and broken structure, but not
 * a flipped bit inside a data block: this does. */
static const char *const CHECKSUM = "checksum";

static void quiet_hdf5(void) {
    static int done;
    if (!done) H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report errors ourselves */
    done = 1;
}

static const char *path_of(hid_t file) {
    const char *p = file_label[(uint64_t)file % 64];
    return p[0] ? p : "(hdf5 file)";
}

static void remember(hid_t file, const char *path) {
    snprintf(file_label[(uint64_t)file % 64], sizeof file_label[0], "%s", path);
}

static hid_t mpio_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    return fapl;
}

/* 1 on every rank if ok on every rank */
static int all_ranks(int ok) {
    int all = ok;
    COMM_CHECK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    return all;
}

hid_t h5io_create(const char *path) {
    quiet_hdf5();
    hid_t fapl = mpio_fapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (!all_ranks(f >= 0)) comm_fail("%s: cannot create HDF5 file (directory missing or not writable?)", path);
    remember(f, path);
    return f;
}

void h5io_check_readable(const char *path) {
    char *err = NULL, where[64] = "";
    int fd = open(path, O_RDONLY);
    if (fd >= 0) close(fd);
    else {
        if (comm_rank() > 0) snprintf(where, sizeof where, " (on rank %d: node-local storage?)", comm_rank());
        err = errno == ENOENT ? xsprintf("%s: no such file%s", path, where)
                              : xsprintf("%s: cannot read: %s%s", path, strerror(errno), where);
    }
    comm_fail_if_any(err); /* before the collective open, which a rank that cannot read would leave */
    free(err);
}

/* Collective: 1 if this process verified PATH before and it has not changed since (the stages
 * of one run open the dataset several times); else remembers it as verified now. */
static int verified_before(const char *path) {
    static struct { dev_t dev; ino_t ino; off_t size; struct timespec mtime; } seen[32];
    static int n;
    struct stat sb;
    int ok = stat(path, &sb) == 0, found = 0;
    for (int i = 0; i < n && ok && !found; i++)
        found = seen[i].dev == sb.st_dev && seen[i].ino == sb.st_ino && seen[i].size == sb.st_size &&
                seen[i].mtime.tv_sec == sb.st_mtim.tv_sec && seen[i].mtime.tv_nsec == sb.st_mtim.tv_nsec;
    int64_t unseen = !found;
    comm_sum_i64(&unseen, 1); /* verify unless every rank has seen it */
    if (unseen && ok && n < 32) seen[n].dev = sb.st_dev, seen[n].ino = sb.st_ino, seen[n].size = sb.st_size, seen[n++].mtime = sb.st_mtim;
    return !unseen;
}

hid_t h5io_open(const char *path, int flags) {
    quiet_hdf5();
    h5io_check_readable(path);
    hid_t fapl = mpio_fapl();
    hid_t f = H5Fopen(path, flags & H5IO_WRITE ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (!all_ranks(f >= 0)) comm_fail("%s: cannot open as HDF5 (truncated, corrupt or not an HDF5 file)", path);
    remember(f, path);
    if (!(flags & (H5IO_WRITE | H5IO_UNVERIFIED)) && !verified_before(path)) {
        char *err = h5io_verify(f, NULL);
        if (err) comm_fail("%s", err);
    }
    return f;
}

void h5io_close(hid_t file) {
    char path[sizeof file_label[0]];
    snprintf(path, sizeof path, "%s", path_of(file));
    file_label[(uint64_t)file % 64][0] = 0;
    if (H5Fclose(file) < 0) comm_fatal("%s: closing failed: the last writes did not reach the disk (disk full?)", path);
}

int h5io_has(hid_t file, const char *name) {
    quiet_hdf5();
    /* H5Lexists needs every parent to exist: walk the path */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", name);
    for (char *p = buf + 1; ; p++) {
        char c = *p;
        if (c == '/' || c == 0) {
            *p = 0;
            if (H5Lexists(file, buf, H5P_DEFAULT) <= 0) return 0;
            *p = c;
        }
        if (!c) return 1;
    }
}

static void make_parents(hid_t lcpl) { H5Pset_create_intermediate_group(lcpl, 1); }

static hid_t collective_dxpl(void) {
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    return dxpl;
}

/* File and memory dataspaces selecting rows [lo, lo+count) of a dataset of shape dims. */
static void row_spaces(hid_t dset, int64_t lo, int64_t count, hid_t *filespace, hid_t *memspace) {
    *filespace = H5Dget_space(dset);
    int nd = H5Sget_simple_extent_ndims(*filespace);
    hsize_t dims[8], start[8] = {0}, cnt[8];
    H5Sget_simple_extent_dims(*filespace, dims, NULL);
    for (int i = 0; i < nd; i++) cnt[i] = dims[i];
    start[0] = (hsize_t)lo;
    cnt[0] = (hsize_t)count;
    if (count > 0) {
        H5Sselect_hyperslab(*filespace, H5S_SELECT_SET, start, NULL, cnt, NULL);
        *memspace = H5Screate_simple(nd, cnt, NULL);
    } else {
        H5Sselect_none(*filespace);
        hsize_t one = 1;
        *memspace = H5Screate_simple(1, &one, NULL);
        H5Sselect_none(*memspace);
    }
}

/* Creates dataset name (collective) and writes rows [row_lo, row_lo + row_count) from data:
 * collectively, or when whole, rank 0 alone writes all rows (independent I/O) while every rank
 * holds them (so every rank knows the checksum without a reduction). */
static void write_rows(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims, int64_t row_lo,
                       int64_t row_count, const void *data, int whole) {
    hsize_t hd[8];
    for (int i = 0; i < ndims; i++) hd[i] = (hsize_t)dims[i];
    hid_t space = H5Screate_simple(ndims, hd, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    make_parents(lcpl);
    hid_t dset = H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Sclose(space);
    if (dset < 0) comm_fatal("%s: cannot create dataset %s", path_of(file), name);
    herr_t err = 0;
    if (!whole || comm_rank() == 0) {
        hid_t fs, ms, dxpl = whole ? H5Pcreate(H5P_DATASET_XFER) : collective_dxpl();
        row_spaces(dset, row_lo, row_count, &fs, &ms);
        err = H5Dwrite(dset, type, ms, fs, dxpl, data);
        H5Sclose(fs); H5Sclose(ms); H5Pclose(dxpl);
    }
    H5Dclose(dset);
    if (err < 0) comm_fatal("%s: writing %s failed (disk full?)", path_of(file), name);
    size_t row_bytes = H5Tget_size(type);
    for (int i = 1; i < ndims; i++) row_bytes *= (size_t)dims[i];
    uint64_t sum = hash_rows(data, row_lo, row_count, row_bytes);
    if (!whole) comm_sum_u64(&sum, 1);
    h5io_attr_write_i64(file, name, CHECKSUM, (int64_t)sum);
}

void h5io_write_rows(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims, int64_t row_lo,
                     int64_t row_count, const void *data) {
    write_rows(file, name, type, ndims, dims, row_lo, row_count, data, 0);
}

void h5io_write_whole(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims, const void *data) {
    write_rows(file, name, type, ndims, dims, 0, dims[0], data, 1);
}

static hid_t open_dataset(hid_t file, const char *name) {
    hid_t dset = h5io_has(file, name) ? H5Dopen2(file, name, H5P_DEFAULT) : -1;
    if (dset < 0) comm_fatal("%s: missing dataset %s", path_of(file), name);
    return dset;
}

void h5io_read_rows(hid_t file, const char *name, hid_t type, int64_t row_lo, int64_t row_count, void *data) {
    hid_t dset = open_dataset(file, name);
    hid_t fs, ms, dxpl = collective_dxpl();
    row_spaces(dset, row_lo, row_count, &fs, &ms);
    herr_t err = H5Dread(dset, type, ms, fs, dxpl, data);
    H5Sclose(fs); H5Sclose(ms); H5Pclose(dxpl); H5Dclose(dset);
    if (err < 0) comm_fatal("%s: reading %s rows %lld..%lld failed (truncated or corrupt file?)", path_of(file), name,
                            (long long)row_lo, (long long)(row_lo + row_count));
}

int h5io_shape(hid_t file, const char *name, int64_t *dims, int maxdims) {
    if (!h5io_has(file, name)) comm_fail("%s: missing dataset %s", path_of(file), name);
    hid_t dset = open_dataset(file, name), space = H5Dget_space(dset);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t hd[8];
    if (nd < 0 || nd > maxdims || nd > 8) comm_fail("%s: %s has %d dimensions, expected at most %d", path_of(file), name, nd, maxdims);
    H5Sget_simple_extent_dims(space, hd, NULL);
    for (int i = 0; i < nd; i++) dims[i] = (int64_t)hd[i];
    H5Sclose(space);
    H5Dclose(dset);
    return nd;
}

void h5io_read_all(hid_t file, const char *name, hid_t type, void *data) {
    int64_t dims[8];
    h5io_shape(file, name, dims, 8);
    h5io_read_rows(file, name, type, 0, dims[0], data);
}

/* ---------- checksums ---------- */

typedef struct { char **names; int n; size_t cap; } Names;

static herr_t collect_dataset(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    Names *l = data;
    hid_t o = info->type == H5L_TYPE_HARD ? H5Oopen(g, name, H5P_DEFAULT) : -1;
    if (o < 0) return 0;
    if (H5Iget_type(o) == H5I_DATASET) {
        if ((size_t)l->n == l->cap) l->names = xrealloc(l->names, sizeof(char *) * (l->cap = l->cap ? 2 * l->cap : 16));
        l->names[l->n++] = xsprintf("/%s", name);
    }
    H5Oclose(o);
    return 0;
}

/* This rank's rows of dataset d (file type ftype, shape dims) hashed into *sum; 0 or -1 on a read error. */
static int hash_my_rows(hid_t d, hid_t ftype, const hsize_t *dims, int nd, uint64_t *sum) {
    hid_t mtype = H5Tget_native_type(ftype, H5T_DIR_ASCEND);
    size_t row_bytes = H5Tget_size(mtype);
    for (int i = 1; i < nd; i++) row_bytes *= (size_t)dims[i];
    int64_t lo, hi, chunk = (int64_t)((64 << 20) / (row_bytes ? row_bytes : 1)) + 1;
    comm_split_range(nd ? (int64_t)dims[0] : 1, comm_size(), comm_rank(), &lo, &hi);
    char *buf = xmalloc(row_bytes * (size_t)(hi - lo < chunk ? hi - lo : chunk));
    int rc = 0;
    for (int64_t r = lo; r < hi && rc == 0; r += chunk) {
        int64_t n = hi - r < chunk ? hi - r : chunk;
        hid_t fs, ms;
        row_spaces(d, r, n, &fs, &ms); /* independent reads: the ranks read different numbers of chunks */
        rc = H5Dread(d, mtype, nd ? ms : H5S_ALL, nd ? fs : H5S_ALL, H5P_DEFAULT, buf) < 0 ? -1 : 0;
        H5Sclose(fs); H5Sclose(ms);
        *sum += hash_rows(buf, r, n, row_bytes);
    }
    free(buf);
    H5Tclose(mtype);
    return rc;
}

/* Collective: NULL if dataset name matches its checksum or has none (*checked then stays). */
static char *verify_dataset(hid_t f, const char *name, int *checked) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return comm_agree_error(xsprintf("%s: cannot open dataset %s (corrupt file?)", path_of(f), name));
    hid_t ftype = H5Dget_type(d), space = H5Dget_space(d);
    int64_t want = 0;
    int vlen = H5Tis_variable_str(ftype) > 0 || H5Tget_class(ftype) == H5T_VLEN; /* checked when read */
    char *err = NULL;
    if (!vlen && h5io_attr_read_i64(f, name, CHECKSUM, &want)) {
        hsize_t dims[8] = {0};
        int nd = H5Sget_simple_extent_ndims(space);
        uint64_t sum = 0;
        if (nd < 0 || nd > 8 || H5Sget_simple_extent_dims(space, dims, NULL) < 0 || hash_my_rows(d, ftype, dims, nd, &sum) < 0)
            err = xsprintf("%s: reading dataset %s failed (truncated or corrupt file)", path_of(f), name);
        if (!(err = comm_agree_error(err))) {
            comm_sum_u64(&sum, 1);
            if (sum != (uint64_t)want) err = xsprintf("%s: dataset %s does not match its checksum (corrupt file)", path_of(f), name);
            *checked = 1;
        }
    }
    H5Tclose(ftype); H5Sclose(space); H5Dclose(d);
    return err;
}

char *h5io_verify(hid_t file, const char *only) {
    Names l = {0};
    if (only && h5io_has(file, only)) collect_dataset(file, only + (only[0] == '/'), &(H5L_info_t){.type = H5L_TYPE_HARD}, &l);
    if (!only) H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &l); /* the same order on every rank */
    char *err = NULL;
    int checked = 0;
    for (int i = 0; i < l.n; i++) {
        if (!err) err = verify_dataset(file, l.names[i], &checked);
        free(l.names[i]);
    }
    free(l.names);
    char *format = !err && !only && !checked && l.n > 0 ? h5io_attr_read_str(file, "/", "format") : NULL;
    if (format) log_warn("%s (%s) has no data checksums (written by an older version): corrupt data would go unnoticed", path_of(file), format);
    free(format);
    return err;
}

static hid_t open_object(hid_t file, const char *obj) {
    hid_t o = H5Oopen(file, obj, H5P_DEFAULT);
    if (o < 0) comm_fatal("%s: missing object %s", path_of(file), obj);
    return o;
}

static void attr_write(hid_t file, const char *obj, const char *attr, hid_t type, const void *value) {
    hid_t o = open_object(file, obj);
    if (H5Aexists(o, attr) > 0) H5Adelete(o, attr);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, attr, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t err = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Oclose(o);
    if (err < 0) comm_fatal("%s: cannot write attribute %s of %s", path_of(file), attr, obj);
}

void h5io_attr_write_i64(hid_t file, const char *obj, const char *attr, int64_t value) {
    attr_write(file, obj, attr, H5T_NATIVE_INT64, &value);
}

void h5io_attr_write_f64(hid_t file, const char *obj, const char *attr, double value) {
    attr_write(file, obj, attr, H5T_NATIVE_DOUBLE, &value);
}

void h5io_attr_write_str(hid_t file, const char *obj, const char *attr, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    attr_write(file, obj, attr, type, value);
    H5Tclose(type);
}

static hid_t attr_open(hid_t file, const char *obj, const char *attr) {
    if (!h5io_has(file, obj) && strcmp(obj, "/") != 0) return -1;
    hid_t o = H5Oopen(file, obj, H5P_DEFAULT);
    if (o < 0) return -1;
    hid_t a = H5Aexists(o, attr) > 0 ? H5Aopen(o, attr, H5P_DEFAULT) : -1;
    H5Oclose(o);
    return a;
}

int h5io_attr_read_i64(hid_t file, const char *obj, const char *attr, int64_t *value) {
    hid_t a = attr_open(file, obj, attr);
    if (a < 0) return 0;
    herr_t err = H5Aread(a, H5T_NATIVE_INT64, value);
    H5Aclose(a);
    return err >= 0;
}

int h5io_attr_read_f64(hid_t file, const char *obj, const char *attr, double *value) {
    hid_t a = attr_open(file, obj, attr);
    if (a < 0) return 0;
    herr_t err = H5Aread(a, H5T_NATIVE_DOUBLE, value);
    H5Aclose(a);
    return err >= 0;
}

char *h5io_attr_read_str(hid_t file, const char *obj, const char *attr) {
    hid_t a = attr_open(file, obj, attr);
    if (a < 0) return NULL;
    hid_t ftype = H5Aget_type(a);
    size_t n = H5Tget_size(ftype);
    H5Tclose(ftype);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, n);
    char *s = xcalloc(n + 1, 1);
    herr_t err = H5Aread(a, type, s);
    H5Tclose(type);
    H5Aclose(a);
    if (err < 0) { free(s); return NULL; }
    return s;
}

/* hash_row over each string with its terminating 0 (NULL reads back as "") */
static uint64_t strings_checksum(char *const *strings, int64_t n) {
    uint64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *s = strings[i] ? strings[i] : "";
        sum += hash_row(i, s, strlen(s) + 1);
    }
    return sum;
}

void h5io_write_strings_serial(const char *path, const char *name, char *const *strings, int64_t n) {
    quiet_hdf5();
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) comm_fatal("%s: cannot reopen to write %s", path, name);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hsize_t dim = (hsize_t)n;
    hid_t space = H5Screate_simple(1, &dim, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    make_parents(lcpl);
    hid_t dset = H5Dcreate2(f, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    herr_t err = dset < 0 ? -1 : H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, strings);
    if (dset >= 0) H5Dclose(dset);
    H5Pclose(lcpl); H5Sclose(space); H5Tclose(type);
    remember(f, path);
    if (err >= 0) h5io_attr_write_i64(f, name, CHECKSUM, (int64_t)strings_checksum(strings, n));
    file_label[(uint64_t)f % 64][0] = 0;
    if (H5Fclose(f) < 0 || err < 0) comm_fatal("%s: writing %s failed", path, name);
}

char **h5io_read_strings_serial(const char *path, const char *name, int64_t *n) {
    quiet_hdf5();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) comm_fatal("%s: cannot open as HDF5", path);
    hid_t dset = h5io_has(f, name) ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    if (dset < 0) comm_fatal("%s: missing dataset %s", path, name);
    hid_t space = H5Dget_space(dset);
    hsize_t dim = 0;
    H5Sget_simple_extent_dims(space, &dim, NULL);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    char **raw = xcalloc(dim, sizeof(char *));
    if (H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) comm_fatal("%s: reading %s failed", path, name);
    char **out = xcalloc(dim, sizeof(char *));
    for (hsize_t i = 0; i < dim; i++) out[i] = xstrdup(raw[i] ? raw[i] : "");
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, raw);
    free(raw);
    H5Tclose(type); H5Sclose(space); H5Dclose(dset);
    int64_t want = 0;
    remember(f, path);
    int bad = h5io_attr_read_i64(f, name, CHECKSUM, &want) && (uint64_t)want != strings_checksum(out, (int64_t)dim);
    file_label[(uint64_t)f % 64][0] = 0;
    H5Fclose(f);
    if (bad) comm_fatal("%s: dataset %s does not match its checksum (corrupt file)", path, name);
    *n = (int64_t)dim;
    return out;
}

char *h5io_partial_name(const char *final_path) { return xsprintf("%s.partial", final_path); }

void h5io_commit_partial(const char *partial, const char *final_path) {
    comm_barrier();
    int err = 0;
    if (comm_rank() == 0) err = rename(partial, final_path) != 0;
    comm_bcast(&err, sizeof err, 0);
    if (err) comm_fail("cannot rename %s to %s", partial, final_path);
    comm_cleanup_remove(partial);
}
