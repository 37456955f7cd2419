#!/usr/bin/env bash
# scripts/slurm-local.sh start|stop|status|env: a real one-node Slurm on this machine (munge, slurmctld,
# slurmd) to run the job scripts in jobs/ for real. start installs what is missing (Debian packages), writes a
# minimal slurm.conf for this host into $SLURM_LOCAL_DIR (default /var/tmp/car-slurm), starts the daemons and
# waits until the node is idle; stop ends them by their pid files. Both are idempotent. Clients find the
# configuration through SLURM_CONF: eval "$(scripts/slurm-local.sh env)" (or /etc/slurm/slurm.conf, which start
# links to it when that file does not exist). Needs root (or sudo). SLURM_LOCAL_NODES=N (default 1)
# splits this machine into N Slurm nodes (one slurmd each, own port, spool and TmpFS) to try multi-node
# launches on one host.
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-/var/tmp/car-slurm}
CONF=$DIR/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
PKGS=(slurmctld slurmd slurm-client munge)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export SLURM_CONF=$CONF
say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_missing() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them"
    say "installing ${missing[*]} (log: $DIR/apt.log)"
    mkdir -p "$DIR"
    local apt=(env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}")
    # an old package list may name versions the mirror no longer has: update once and retry
    "${apt[@]}" >"$DIR/apt.log" 2>&1 || { $SUDO apt-get update -qq >>"$DIR/apt.log" 2>&1 && "${apt[@]}" >>"$DIR/apt.log" 2>&1; } ||
        { tail -n 5 "$DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
start_munge() {
    munge_ok && return 0
    $SUDO install -d -o munge -g munge -m 0755 /run/munge
    $SUDO install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge /etc/munge
    [ -f /etc/munge/munge.key ] || $SUDO runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    $SUDO runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.ours" # stop ends munged only when start began it
    local n=0
    until munge_ok; do [ $n -ge 50 ] && die "munged does not answer (munge -n | unmunge)"; sleep 0.1; n=$((n + 1)); done
}

NODES=${SLURM_LOCAL_NODES:-1}
node_names() { if [ "$NODES" -eq 1 ]; then hostname -s; else seq -f "c%g" 1 "$NODES"; fi; }
# node_lines: the NodeName lines, from slurmd -C (this host's CPUs and memory), split over NODES
node_lines() {
    local hw cpus mem i
    hw=$(slurmd -C | head -n 1) # NodeName=HOST CPUs=.. Boards=.. ... RealMemory=..
    [[ "$hw" == NodeName=* ]] || die "slurmd -C did not describe this node: $hw"
    if [ "$NODES" -eq 1 ]; then echo "$hw NodeAddr=127.0.0.1 State=UNKNOWN"; return; fi
    cpus=$(grep -o 'CPUs=[0-9]*' <<<"$hw" | cut -d= -f2); mem=$(grep -o 'RealMemory=[0-9]*' <<<"$hw" | cut -d= -f2)
    [ "$cpus" -ge "$NODES" ] || die "SLURM_LOCAL_NODES=$NODES: this machine has only $cpus CPUs"
    for i in $(seq 1 "$NODES"); do
        echo "NodeName=c$i NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$((6820 + i)) CPUs=$((cpus / NODES)) RealMemory=$((mem / NODES)) State=UNKNOWN"
    done
}

write_conf() {
    local host plugdir mpi=none
    host=$(hostname -s)
    plugdir=$(dirname "$(dpkg -L slurmd 2>/dev/null | grep -m1 '/slurm-wlm/.*\.so$' || echo /usr/lib/x86_64-linux-gnu/slurm-wlm/x.so)")
    [ -f "$plugdir/mpi_pmix.so" ] && mpi=pmix
    mkdir -p "$DIR/state"
    for n in $(node_names); do mkdir -p "$DIR/spool-$n" "$DIR/tmp-$n"; done
    cat >"$CONF.tmp" <<EOF
# written by scripts/slurm-local.sh: one node, no cgroups, no accounting
ClusterName=car
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after cred_expire seconds (120 by default): short for tests
AuthInfo=cred_expire=${SLURM_LOCAL_REQUEUE_DELAY:-10}
CredType=cred/munge
MpiDefault=$mpi
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
# look for runnable jobs (e.g. a requeued one) every few seconds, not every minute
SchedulerParameters=sched_interval=3,bf_interval=3
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=600
StateSaveLocation=$DIR/state
# per node (%n): several slurmd on one host must not share them (PMIx puts its directory in TmpFS)
SlurmdSpoolDir=$DIR/spool-%n
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmdLogFile=$DIR/slurmd-%n.log
TmpFS=$DIR/tmp-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/slurmctld.log
$(node_lines)
PartitionName=local Nodes=$(node_names | paste -sd,) Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    if [ ! -e "$ETC_CONF" ] && [ -d "$(dirname "$ETC_CONF")" ]; then
        ln -s "$CONF" "$ETC_CONF" && touch "$DIR/etc-link.ours"
    fi
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -N -o %t 2>/dev/null | sort -u | paste -sd,; } # "idle" when every node is
slurmds_alive() { local n; for n in $(node_names); do alive "$DIR/slurmd-$n.pid" || return 1; done; }
running() { alive "$DIR/slurmctld.pid" && slurmds_alive && scontrol ping 2>/dev/null | grep -q UP; }

start() {
    if running; then say "already running ($(node_state)); SLURM_CONF=$CONF"; return 0; fi
    install_missing
    mkdir -p "$DIR"
    start_munge
    stop_daemons
    write_conf
    # cold start (-c): a killed earlier run leaves no ghost jobs holding the node
    slurmctld -c -i -f "$CONF"
    for n in $(node_names); do slurmd -N "$n" -f "$CONF"; done
    local n=0 st=""
    while :; do
        st=$(node_state)
        [ "$st" = idle ] && break
        case "$st" in *down*|*drain*) scontrol update NodeName="$(node_names | paste -sd,)" State=RESUME 2>/dev/null || true;; esac
        [ $n -ge 120 ] && die "node not idle after 60 s (state '$st'); logs in $DIR"
        sleep 0.5; n=$((n + 1))
    done
    say "running: $NODES node(s) $(node_names | paste -sd,) idle; SLURM_CONF=$CONF"
}

stop_pid() { # pid file
    alive "$1" || { rm -f "$1"; return 0; }
    local pid n=0
    pid=$(cat "$1")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$1"
}
stop_daemons() {
    if alive "$DIR/slurmctld.pid"; then # end the jobs first, so none is left behind as a ghost
        scancel --quiet --partition=local 2>/dev/null || true
        local n=0
        while [ -n "$(squeue -h -t R,CG 2>/dev/null)" ] && [ $n -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
    fi
    local f
    for f in "$DIR"/slurmd-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
    stop_pid "$DIR/slurmctld.pid"
}
stop() {
    stop_daemons
    if [ -f "$DIR/munged.ours" ]; then
        stop_pid /run/munge/munged.pid
        rm -f "$DIR/munged.ours"
    fi
    if [ -f "$DIR/etc-link.ours" ]; then
        [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ] && rm -f "$ETC_CONF"
        rm -f "$DIR/etc-link.ours"
    fi
    say "stopped"
}

status() {
    if running; then
        echo "slurmctld up, node(s) $(node_names | paste -sd,) $(node_state); SLURM_CONF=$CONF"
        squeue 2>/dev/null || true
    else
        echo "not running"; return 1
    fi
}

case "${1:-}" in
    start) start;;
    stop) stop;;
    status) status;;
    env) echo "export SLURM_CONF=$CONF";;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2;;
esac
