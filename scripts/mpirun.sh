#!/usr/bin/env bash
# mpirun as the project's launch scripts use it: root allowed (CI runs as root), more ranks
# than cores allowed, one BLAS thread per rank unless the caller chose otherwise.
# The BLAS kernel itself is chosen by every program at start (see comm_init).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
exec mpirun "$@"
