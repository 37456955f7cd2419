#!/usr/bin/env bash
# mpirun as the project's launch scripts use it: root allowed (CI runs as root), more ranks
# than cores allowed, one BLAS thread per rank unless the caller chose otherwise.
# The BLAS kernel itself is chosen by every program at start (see comm_init).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# No core binding unless the caller asks for one (--bind-to, or this variable): Open MPI binds the
# ranks of each mpirun from the first core up, without regard to other mpiruns, so the two one-rank
# cells that scripts/experiments.sh and a tuning queue run side by side were both bound to core 0
# and shared it (each at 50% CPU, the other core idle). Within a Slurm allocation the job's cpuset
# still confines the ranks.
export OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}
exec mpirun "$@"
