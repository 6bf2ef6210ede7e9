#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying and testing sweeps:
#
#   scripts/slurm_local.sh start    # install slurm-wlm + munge if missing (apt-get, needs root),
#                                   # write a slurm.conf for this host, start munged/slurmctld/slurmd
#   export SLURM_CONF=$(scripts/slurm_local.sh conf)   # so sbatch/squeue/sinfo use it
#   python src/train.py -m hydra/launcher=submitit_slurm seed=1,2
#   scripts/slurm_local.sh status   # daemons, sinfo, squeue
#   scripts/slurm_local.sh stop     # stop the daemons started by `start` (by their pid files)
#
# Everything lives in $SLURM_LOCAL_DIR (default /tmp/hydrabot-slurm): slurm.conf, pid files,
# logs, spool directories. One partition `debug` (default) holds the node with all CPUs and
# 90% of the memory. Environment knobs: SLURM_LOCAL_DIR, SLURM_LOCAL_PARTITION (debug),
# SLURM_LOCAL_CPUS (nproc), SLURM_LOCAL_MEM_MB (90% of MemTotal), SLURM_LOCAL_PORT (6817; slurmd
# uses the next port), SLURM_LOCAL_INSTALL=0 to never apt-get.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/hydrabot-slurm}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
PORT=${SLURM_LOCAL_PORT:-6817}
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_bin() {  # daemons live in /usr/sbin, which a non-login root shell may not have on PATH
  local name=$1
  command -v "$name" 2>/dev/null || { [[ -x /usr/sbin/$name ]] && echo "/usr/sbin/$name"; } || true
}

install_packages() {
  if [[ -n "$(find_bin slurmctld)" && -n "$(find_bin slurmd)" && -n "$(find_bin munged)" \
        && -n "$(command -v sbatch || true)" ]]; then
    return
  fi
  [[ "${SLURM_LOCAL_INSTALL:-1}" == 1 ]] || die "slurm-wlm/munge are missing and SLURM_LOCAL_INSTALL=0"
  command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get; install them"
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "installing slurm-wlm needs root (or sudo)"
    sudo="sudo -n"
  fi
  log "installing slurm-wlm and munge (apt-get)"
  # The packages' own scripts would start system-wide munged/slurmctld/slurmd (with a default
  # config that this cluster does not use); a policy-rc.d that refuses service starts, if the
  # machine has none, keeps them from starting. It is removed when the install ends.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null && $sudo chmod 755 $policy && added_policy=1
  fi
  local rc=0
  timeout 300 $sudo apt-get update -qq >&2 || rc=$?
  if [[ $rc == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive timeout 600 $sudo apt-get install -y -qq --no-install-recommends \
      slurm-wlm munge >&2 || rc=$?
  fi
  [[ $added_policy == 0 ]] || $sudo rm -f $policy
  [[ $rc == 0 ]] || die "apt-get could not install slurm-wlm and munge (exit $rc; 124 = it took too long)"
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)}
  mkdir -p "$DIR"/{spool/ctld,spool/d,log,run} "$MUNGE_DIR"
  cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on $host.
ClusterName=hydrabot-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
CryptoType=crypto/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
# Requeue on preemption/timeout (submitit requeues timed-out jobs itself, through scontrol).
JobRequeue=1
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # cgroup plugins are not used (proctrack/linuxproc, task/none), but slurmd reads cgroup.conf.
  echo "CgroupPlugin=autodetect" >"$DIR/cgroup.conf"
  echo "IgnoreSystemd=yes" >>"$DIR/cgroup.conf"
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if pid_alive "$MUNGE_DIR/munged.pid"; then return; fi
  local key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    log "creating $key"
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=$key status=none
  fi
  chown "$(id -un)" $key 2>/dev/null || true
  chmod 400 $key
  chmod 700 "$MUNGE_DIR"
  # This cluster's own munged and socket (named in slurm.conf's AuthInfo), so that several
  # clusters (tests, other users of the machine) never share one. --force skips munged's checks
  # of the socket directory's permissions.
  "$(find_bin munged)" --force --pid-file "$MUNGE_DIR/munged.pid" \
    --socket "$MUNGE_DIR/munge.socket" --key-file $key \
    --log-file "$DIR/log/munged.log" --seed-file "$MUNGE_DIR/munged.seed"
  for _ in $(seq 50); do [[ -S $MUNGE_DIR/munge.socket ]] && return; sleep 0.1; done
  die "munged did not start; see $DIR/log/munged.log"
}

cmd_start() {
  install_packages
  if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
    log "already running (SLURM_CONF=$CONF)"
    echo "$CONF"
    return
  fi
  write_conf
  start_munge
  export SLURM_CONF=$CONF
  pid_alive "$DIR/run/slurmctld.pid" || timeout 60 "$(find_bin slurmctld)" -f "$CONF" -i
  pid_alive "$DIR/run/slurmd.pid" || timeout 60 "$(find_bin slurmd)" -f "$CONF"
  local state=""
  for _ in $(seq 60); do
    state=$(timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    case $state in idle*|mixed*|alloc*) break ;; esac
    if [[ $state == down* || $state == drain* ]]; then
      timeout 10 scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    fi
    sleep 0.5
  done
  case $state in
    idle*|mixed*|alloc*) log "up: node $(hostname -s) is $state, partition $PARTITION (SLURM_CONF=$CONF)" ;;
    *) log "node state is '${state:-unknown}'; last log lines:"
       tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       cmd_stop; die "the cluster did not come up" ;;
  esac
  echo "$CONF"
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait, then KILL the one process of that pid file
  local name=$1 file=$2 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop; killing $pid"; kill -9 "$pid" || true; fi
  fi
  rm -f "$file"
}

cmd_stop() {
  if [[ -f $CONF ]] && pid_alive "$DIR/run/slurmctld.pid"; then
    SLURM_CONF=$CONF timeout 20 scancel --user="$(id -un)" >/dev/null 2>&1 || true
  fi
  stop_pid slurmd "$DIR/run/slurmd.pid"
  stop_pid slurmctld "$DIR/run/slurmctld.pid"
  stop_pid munged "$MUNGE_DIR/munged.pid"
  log "stopped"
}

cmd_status() {
  local rc=0 d
  for d in slurmctld slurmd; do
    if pid_alive "$DIR/run/$d.pid"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"
    else echo "$d: stopped"; rc=3; fi
  done
  if pid_alive "$MUNGE_DIR/munged.pid"; then echo "munged: running (pid $(cat "$MUNGE_DIR/munged.pid"))"
  else echo "munged: stopped"; rc=3; fi
  if [[ $rc == 0 ]]; then
    export SLURM_CONF=$CONF
    echo "SLURM_CONF=$CONF"
    sinfo || true
    squeue || true
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  conf) echo "$CONF" ;;
  *) echo "usage: $0 start|stop|status|conf" >&2; exit 2 ;;
esac
