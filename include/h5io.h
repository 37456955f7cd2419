/* h5io: HDF5 files written and read by all ranks together. Arrays keep their global shape;
 * each rank writes or reads a contiguous block of rows. Errors name the file and object. */
#ifndef CAR_H5IO_H
#define CAR_H5IO_H
#include <hdf5.h>
#include <stdint.h>

/* Collective. Creates PATH (truncating) for parallel writing. */
hid_t h5io_create(const char *path);
/* Collective. Fails the job cleanly (one line naming PATH and the rank) unless every rank can
 * open PATH for reading: before a collective open, which would hang if one rank left it. */
void h5io_check_readable(const char *path);
/* Collective. Opens an existing file read-only (flags 0) or read-write (H5IO_WRITE); a missing,
 * unreadable (on any rank), truncated or foreign file is a clean job failure naming PATH.
 * Read-only, it also checks the file with h5io_verify (a corrupt dataset fails the job naming
 * the file and the dataset) unless flags has H5IO_UNVERIFIED (the caller checks itself). */
enum { H5IO_WRITE = 1, H5IO_UNVERIFIED = 2 };
hid_t h5io_open(const char *path, int flags);
/* Collective, never exits. Reads every dataset of FILE that carries a checksum (or only dataset
 * ONLY when not NULL; absent: not checked), each rank a share of its rows, and compares: NULL,
 * or one line naming the file and the first corrupt dataset. A file of ours (a "format"
 * attribute) without any checksum was written before they existed: accepted with a warning.
 * Datasets written by h5io_write_rows (and string arrays) carry the checksum. */
char *h5io_verify(hid_t file, const char *only);
void h5io_close(hid_t file);
/* Non-collective: 1 if PATH opens as HDF5 and holds object NAME. */
int h5io_has(hid_t file, const char *name);

/* Collective. Creates dataset NAME (parent groups too) of global shape dims[0..ndims) and
 * writes rows [row_lo, row_lo + row_count) of dims[0] from data (row-major); the ranks' rows must
 * not overlap. Adds the attribute "checksum" (see h5io_verify). */
void h5io_write_rows(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims, int64_t row_lo,
                     int64_t row_count, const void *data);
/* Collective. The same for an array that every rank holds whole (data: all dims[0] rows, equal
 * on every rank): rank 0 alone writes it, so that many ranks do not split a small write. */
void h5io_write_whole(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims, const void *data);
/* Collective. Reads rows [row_lo, row_lo + row_count) of NAME into data. */
void h5io_read_rows(hid_t file, const char *name, hid_t type, int64_t row_lo, int64_t row_count, void *data);
/* Shape of NAME; returns ndims (fails the job if NAME is missing or has more than maxdims). */
int h5io_shape(hid_t file, const char *name, int64_t *dims, int maxdims);
/* Collective. Whole small array replicated on every rank. */
void h5io_read_all(hid_t file, const char *name, hid_t type, void *data);

/* Attributes on object OBJ ("/" for the file). Writes are collective with equal values. */
void h5io_attr_write_i64(hid_t file, const char *obj, const char *attr, int64_t value);
void h5io_attr_write_f64(hid_t file, const char *obj, const char *attr, double value);
void h5io_attr_write_str(hid_t file, const char *obj, const char *attr, const char *value);
int h5io_attr_read_i64(hid_t file, const char *obj, const char *attr, int64_t *value);   /* 0 if absent */
int h5io_attr_read_f64(hid_t file, const char *obj, const char *attr, double *value);
char *h5io_attr_read_str(hid_t file, const char *obj, const char *attr);                  /* NULL if absent */

/* Serial (one rank): variable-length string arrays, which parallel HDF5 cannot write. */
void h5io_write_strings_serial(const char *path, const char *name, char *const *strings, int64_t n);
char **h5io_read_strings_serial(const char *path, const char *name, int64_t *n);

/* Write-then-rename protocol: the temporary name a file is written under, and the rename
 * (rank 0) once it is complete. A failure in between leaves the final name untouched. */
char *h5io_partial_name(const char *final_path);
void h5io_commit_partial(const char *partial, const char *final_path);

#endif
