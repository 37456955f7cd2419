/* checkpoint: the training state on disk, written and read by all ranks together, loadable
 * with any rank count. One HDF5 file per checkpoint, RUN_DIR/checkpoints/step_<NNNNNNNN>.h5:
 *
 *   /<arena>/<tensor>/value   float32 (global_rows x cols), e.g. /params/h.0.qkv_w/value, /uid/uid_emb/value
 *   /<arena>/<tensor>/m, /v   the AdamW moments, same shape (absent in a values-only file)
 *   each of them has the attribute "checksum": the sum over rows of a hash of (row index, row
 *   bytes), the same whichever ranks wrote or read which rows (catches corrupt data)
 *   /extra_json               uint8 bytes of the caller's JSON (absent when none)
 *   attributes of "/": format = "car-checkpoint", version, moments (1 or 0), step, epoch,
 *   step_in_epoch, seed, best_score, best_epoch, best_step, bad_evals, config, config_hash, ranks
 *
 * Gradients are not saved. A rank writes the rows of a tensor that it holds and no lower rank
 * holds; a tensor every rank holds whole (replicated) is written by rank 0 alone. Reading, each
 * rank reads its own rows [row0, row0 + rows), whatever the layout that wrote the file.
 * Files are written as NAME.partial and renamed when complete; RUN_DIR/checkpoints/latest (one
 * line: the file name) is replaced only after that, so a kill mid-write never makes a partial
 * or newer file the latest. h5py: f["params/h.0.qkv_w/value"][...], f.attrs["step"],
 * bytes(f["extra_json"][...]).decode(). */
#ifndef CAR_CHECKPOINT_H
#define CAR_CHECKPOINT_H
#include "arena.h"
#include "config.h"
#include <stdint.h>

/* What a resumed run needs besides the tensors to continue exactly. (epoch, step_in_epoch) is
 * the position of the NEXT step: saved after an epoch's last step and its evaluation it is
 * (epoch + 1, 0); saved after step s (0-based) of epoch e, before its evaluation, (e, s + 1),
 * which may equal steps_per_epoch (then the resumed run evaluates epoch e first). */
typedef struct {
    int64_t step;          /* optimizer steps done = the global index of the next step */
    int epoch;             /* epoch (1-based) of the next step */
    int64_t step_in_epoch; /* steps of that epoch already done */
    uint64_t seed;         /* train.seed: keys the data order (seed, epoch), init and dropout (seed, step);
                              with step it is the whole random state (counter-based rng) */
    double best_score;     /* best validation score so far (-INFINITY: none yet) */
    int best_epoch;        /* the epoch that scored it (0: none) */
    int64_t best_step;     /* step of the checkpoint holding the best parameters (-1: none); save keeps it */
    int bad_evals;         /* evaluations since the best one (early stopping) */
    const char *config;    /* checkpoint_config_text of the run (NULL: none). save records it; load
                              rejects a file recorded with a different one (it is never overwritten) */
    char config_hash[17];  /* FNV-1a 64 of config, hex ("" when none): filled by load */
    int ranks;             /* P that wrote the file: filled by load (informational) */
    char *extra_json;      /* the caller's JSON (e.g. the validation history), NULL: none; load
                              sets it to a new allocation or NULL (free it) */
} CheckpointState;

/* The configuration lines that fix the training trajectory, one "section.key = value;" a line:
 * every key but run.* (paths, resume, checkpointing), train.log_every and eval.batch_size. */
char *checkpoint_config_text(const CarConfig *cfg);
/* RUN_DIR/checkpoints/step_<step, 8 digits>.h5 */
char *checkpoint_path(const char *run_dir, int64_t step);

/* Collective. Writes checkpoint_path(run_dir, st->step) with the moments, then replaces latest,
 * then deletes: leftover *.partial files, checkpoints of later steps (a timeline this run
 * resumed before), and all but the newest keep checkpoints and the one of st->best_step. */
void checkpoint_save(const char *run_dir, const CheckpointState *st, ParamArena *const *arenas,
                     const char *const *arena_names, int n_arenas, int keep);
/* Collective. Writes one checkpoint file at PATH (through PATH.partial); moments 0: the values
 * only (a model to evaluate or ship). Fails the job if the ranks' rows leave a gap. */
void checkpoint_write(const char *path, const CheckpointState *st, ParamArena *const *arenas,
                      const char *const *arena_names, int n_arenas, int moments);
/* Collective. Path of the latest complete checkpoint of run_dir, or NULL: the file named by
 * latest, or when latest is missing or names no file, the complete step_*.h5 of highest step. */
char *checkpoint_latest(const char *run_dir);
/* Collective. Path of the checkpoint holding the best parameters by the latest checkpoint's
 * best_step, or NULL (no checkpoint, no best yet, or its file is gone). */
char *checkpoint_best(const char *run_dir);

/* Collective, never exits: NULL if PATH opens as a checkpoint that holds every tensor of the
 * arenas with their global shapes and no other, recorded with config (NULL: not compared);
 * else one line naming the file and the tensor (or key). Reads no tensor data. */
char *checkpoint_check(const char *path, const char *config, ParamArena *const *arenas,
                       const char *const *arena_names, int n_arenas);
/* Collective, never exits: checkpoint_check, then each rank reads its rows of every tensor's
 * value, m and v (a values-only file leaves m and v as they are) and st, and the checksums are
 * verified. NULL on success, else the error (the arenas may then hold part of the file). */
char *checkpoint_try_load(const char *path, CheckpointState *st, ParamArena *const *arenas,
                          const char *const *arena_names, int n_arenas);
/* Collective. checkpoint_try_load; an error fails the job cleanly (comm_fail). */
void checkpoint_load(const char *path, CheckpointState *st, ParamArena *const *arenas,
                     const char *const *arena_names, int n_arenas);

#endif
