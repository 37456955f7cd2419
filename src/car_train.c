/* car_train CONFIG [-o section.key=value ...]
 * Runs the stages of run.stages (sid, train, eval) that are not done yet, writing into run.dir:
 * config.cfg (the effective configuration), sids.h5, checkpoints, metrics and results. */
#include "comm.h"
#include "config.h"
#include "log.h"
#include "runlock.h"
#include "sid.h"
#include "train.h"
#include "util.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: car_train CONFIG [-o section.key=value ...]\n"
            "  Runs the stages listed in run.stages (sid,train,eval) that are not done yet.\n"
            "  CONFIG    libconfig file with sections data, sid, model, train, eval, run\n"
            "  -o K=V    override one key, e.g. -o run.stages=sid -o sid.levels=4 -o run.dir=\"runs/x\"\n"
            "Writes run.dir/config.cfg (effective configuration), run.dir/sids.h5 and the stages' outputs.\n");
}

/* The effective configuration goes with every output: rank 0 locks run.dir (one car_train per
 * directory) and writes run.dir/config.cfg. */
static void prepare_run_dir(const CarConfig *cfg) {
    char *err = NULL;
    if (comm_rank() == 0 && make_dirs(cfg->run.dir) != 0)
        err = xsprintf("run.dir '%s': cannot create directory: %s", cfg->run.dir, strerror(errno));
    comm_fail_if_any(err);
    runlock_acquire(cfg->run.dir); /* before anything in the directory is written */
    if (comm_rank() == 0) {
        char *path = xsprintf("%s/config.cfg", cfg->run.dir);
        char *text = config_to_string(cfg);
        if (write_file_atomic(path, text) != 0) err = xsprintf("%s: cannot write: %s", path, strerror(errno));
        free(text);
        free(path);
    }
    comm_fail_if_any(err);
    free(err);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "car_train");
    const char *config_path = NULL;
    char **overrides = xcalloc((size_t)argc, sizeof(char *));
    int n_overrides = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (comm_rank() == 0) usage(stdout);
            comm_finalize();
            return 0;
        } else if (!strcmp(argv[i], "-o")) {
            if (i + 1 >= argc) comm_fail("-o needs section.key=value");
            overrides[n_overrides++] = argv[++i];
        } else if (argv[i][0] == '-') {
            comm_fail("unknown option '%s' (see --help)", argv[i]);
        } else if (!config_path) {
            config_path = argv[i];
        } else {
            comm_fail("unexpected argument '%s' (one CONFIG file; see --help)", argv[i]);
        }
    }
    if (!config_path) comm_fail("no CONFIG file given (see --help)");
    CarConfig cfg;
    config_load(&cfg, config_path, n_overrides, overrides);
    log_info("car_train: %s", comm_blas_info());
    if (comm_rank() == 0) {
        char *text = config_to_string(&cfg);
        log_info("effective configuration (%s):\n%s", config_path, text);
        free(text);
    }
    prepare_run_dir(&cfg);
    train_stop_signals_install(); /* from here on a stop signal never kills a rank */
    if (getenv("CAR_TEST_SIGNAL_AT_START") && comm_rank() == 0) raise(SIGUSR1); /* test hook: a signal during the sid stage */
    if (config_has_stage(&cfg, "sid")) sid_stage_run(&cfg);
    int do_train = config_has_stage(&cfg, "train"), do_eval = config_has_stage(&cfg, "eval"), rc = 0;
    if ((do_train || do_eval) && train_stop_requested()) { /* the SID stage is done: sids.h5 is reused */
        log_info("stopped by a signal after the sid stage; run again to continue (exit code %d)", TRAIN_EXIT_STOPPED);
        rc = TRAIN_EXIT_STOPPED;
        do_train = do_eval = 0;
    }
    if (do_train || do_eval) {
        /* the command line goes into results.json so that anyone can rerun it */
        char *command = command_line(argv[0], argc, argv);
        rc = train_stage_run(&cfg, command, do_train, do_eval);
        free(command);
    }
    config_free(&cfg);
    free(overrides);
    comm_finalize();
    return rc;
}
