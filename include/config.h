/* config: the run configuration (libconfig). Every key is declared in one schema with its
 * type, range or allowed words and default; unknown keys, wrong types and out-of-range values
 * are errors naming file, line and key. Command-line overrides: -o section.key=value. */
#ifndef CAR_CONFIG_H
#define CAR_CONFIG_H
#include <stdint.h>
#include <stdio.h>

#define SID_MAX_LEVELS 8

typedef struct { int n; int v[SID_MAX_LEVELS]; } IntList;

enum { SID_RKMEANS, SID_RANDOM, SID_LSH }; /* sid.method */
enum { FUSION_SUM, FUSION_MEAN, FUSION_NONE };
enum { MODE_CAR, MODE_AR };
enum { SCHEDULE_COSINE, SCHEDULE_CONSTANT };

typedef struct {
    struct { char *path; int max_history; } data;
    struct { int levels; IntList codebook; int iters; double tol; int64_t seed; int normalize_residuals, method; } sid;
    struct { int d_model, n_layers, n_heads; double dropout; int fusion, level_embedding, tie_uid, uid_bf16; } model;
    struct {
        int mode; double alpha, label_smoothing; int epochs; int64_t max_steps; int batch_size; double lr, beta2, lr_floor, weight_decay, grad_clip;
        int warmup_steps, schedule; int64_t seed; int patience, eval_every, log_every;
        int grad_bucket_kib; /* gradient all-reduce buckets (0: one after the backward) */
    } train;
    struct { double think_weight; int think_levels, filter_history, batch_size, beam; } eval;
    struct { char *dir, *stages; int resume, checkpoint_every, keep_checkpoints; } run;
    char *source; /* the file it was read from */
} CarConfig;

/* Collective (every rank reads the file). Fails the job cleanly on any error. */
void config_load(CarConfig *cfg, const char *path, int n_overrides, char **overrides);
/* Parse without failing the job: returns NULL on success or an allocated error message. */
char *config_parse(CarConfig *cfg, const char *path, int n_overrides, char **overrides);
void config_free(CarConfig *cfg);
/* The effective configuration, every key, in libconfig syntax (re-loadable). */
void config_print(const CarConfig *cfg, FILE *out);
char *config_to_string(const CarConfig *cfg);
/* Codebook size of level l (0-based), expanding a single size to all levels. */
int config_codebook(const CarConfig *cfg, int level);
/* 1 if stage name ("sid", "train", "eval") is listed in run.stages. */
int config_has_stage(const CarConfig *cfg, const char *stage);

#endif
