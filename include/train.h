/* train: the "train" stage of car_train. Epochs over users in a seeded order, global batches
 * split over the ranks by tokens (batch.h), gradients summed over ranks, AdamW, validation
 * every few epochs with early stopping, test at the best validation epoch. Writes
 * run.dir/metrics.jsonl (one JSON object per log interval and evaluation) and
 * run.dir/results.json. */
#ifndef CAR_TRAIN_H
#define CAR_TRAIN_H
#include "config.h"
#include "gradsync.h"
#include "model.h"

/* car_train's exit code when a stop signal (SIGTERM, SIGUSR1) ended training after a checkpoint
 * of that exact step: "stopped, resumable" (EX_TEMPFAIL), neither success (0) nor an error (1),
 * so a job script can requeue and an afterok chain does not start. */
#define TRAIN_EXIT_STOPPED 75

/* Stop signals for the whole run (car_train installs them first): SIGTERM and SIGUSR1 set a
 * flag with SA_RESTART. Training checkpoints and stops at the end of the current step; at a stage
 * boundary the run stops with TRAIN_EXIT_STOPPED before the next stage (a signal during the
 * final evaluation lets it finish). */
void train_stop_signals_install(void);
/* Collective: 1 when a stop signal reached any rank. */
int train_stop_requested(void);

/* Collective. do_train: train (resuming from the latest checkpoint with run.resume), saving
 * checkpoints; do_eval: evaluate the best checkpoint and write results.json (refused for a
 * model with non-finite parameters). command: the command line that started the run, recorded
 * in results.json. Returns 0, or TRAIN_EXIT_STOPPED when a signal stopped training (no eval). */
int train_stage_run(const CarConfig *cfg, const char *command, int do_train, int do_eval);

/* Collective: one optimizer step of the global batch whose part on this rank is b (may be
 * empty): the loss is the mean over the global batch's targets, replicated gradients are
 * summed over ranks (gs: bucket by bucket during the backward; NULL: one all-reduce after it),
 * the UID tables' stay sharded. Returns this rank's loss sums. */
ModelLoss train_step(Model *m, GradSync *gs, const ModelBatch *b, const OptimConfig *oc, int64_t step,
                     double *grad_norm);

#endif
