/* car_train CONFIG [-o section.key=value ...]: runs the stages of run.stages that are not done. */
#include "comm.h"
#include "config.h"
#include "log.h"
int main(int argc, char **argv) { comm_init(&argc, &argv, "car_train"); log_info("%s", comm_blas_info()); comm_finalize(); return 0; }
