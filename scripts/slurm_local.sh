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
#
# Several nodes on this one machine (multi-node jobs, node failures), root only:
#
#   SLURM_LOCAL_NODES=2 scripts/slurm_local.sh start
#   scripts/slurm_local.sh node-down hbn2   # the node dies: its link goes silent, its processes are killed
#   scripts/slurm_local.sh node-up hbn2     # it boots again: link up, slurmd started afresh
#   SLURM_LOCAL_NODES=2 scripts/slurm_local.sh stop
#
# Node i (hbn1, hbn2, ...) is a slurmd in its own network namespace, joined to a bridge by a veth
# pair, with an address in a private /24 (10.213.K.0/24, K the first subnet this machine does not
# use; the bridge holds .1, where slurmctld listens; node i is .(10+i)) that only these namespaces
# and the bridge use: no route leads out of it and nothing is forwarded. Each node has its own
# hostname (a UTS namespace) and an /etc/hosts naming the nodes (a mount namespace binds
# $SLURM_LOCAL_DIR/hosts there), so a job's processes on a node see that node's name and address,
# as on a real cluster. munged is shared (its socket is a file); the file system is shared, as a
# cluster's network file system would be. CPUs and memory are split evenly between the nodes.
# A silent node is DOWN after SLURM_LOCAL_SLURMD_TIMEOUT (20) seconds, and a requeued job may start
# SLURM_LOCAL_CRED_EXPIRE (30) seconds after its requeue. `stop` kills what runs in the namespaces
# and removes namespaces, veths and the bridge; `start` also removes those of a cluster whose state
# directory is gone (a killed test run), found through the subnet registry in /run/hydrabot-slurm-net.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/hydrabot-slurm}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
PORT=${SLURM_LOCAL_PORT:-6817}
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
NODES=${SLURM_LOCAL_NODES:-1}
NET_ENV="$DIR/net.env"     # the namespaced nodes' network: written by `start`, read by the others
NET_REGISTRY=/run/hydrabot-slurm-net  # one file per subnet in use: the state dir that owns it

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_bin() {  # daemons live in /usr/sbin, which a non-login root shell may not have on PATH
  local name=$1
  command -v "$name" 2>/dev/null || { [[ -x /usr/sbin/$name ]] && echo "/usr/sbin/$name"; } || true
}

install_packages() {
  local packages="slurm-wlm munge" missing=""
  [[ -n "$(find_bin slurmctld)" && -n "$(find_bin slurmd)" && -n "$(find_bin munged)" \
     && -n "$(command -v sbatch || true)" ]] || missing=yes
  if [[ $NODES -gt 1 && -z "$(find_bin ip)" ]]; then packages+=" iproute2"; missing=yes; fi  # namespaced nodes
  [[ -n $missing ]] || return 0
  [[ "${SLURM_LOCAL_INSTALL:-1}" == 1 ]] || die "slurm-wlm/munge are missing and SLURM_LOCAL_INSTALL=0"
  command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get; install them"
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "installing slurm-wlm needs root (or sudo)"
    sudo="sudo -n"
  fi
  log "installing $packages (apt-get)"
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
      $packages >&2 || rc=$?
  fi
  [[ $added_policy == 0 ]] || $sudo rm -f $policy
  [[ $rc == 0 ]] || die "apt-get could not install $packages (exit $rc; 124 = it took too long)"
}

node_name() { echo "hbn$1"; }                    # node i's SLURM name and hostname
node_addr() { echo "10.213.$K.$((10 + $1))"; }
node_ns() { echo "hbm$K-$(node_name "$1")"; }    # its network namespace
node_veth() { echo "hbm${K}n$1"; }               # the bridge's end of its veth pair

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)}
  mkdir -p "$DIR"/{spool/ctld,spool/d,log,run} "$MUNGE_DIR"
  local cluster=hydrabot-local ctl_addr=127.0.0.1 per_node="" slurmd_timeout=30 nodes
  # A requeued job may start again cred_expire seconds after the requeue (SLURM's default, 120 s,
  # is made for big clusters' slow prologs), and the scheduler looks at pending jobs every 5 s
  # rather than every 30-60 s: on one node as on several.
  local auth_info=",cred_expire=${SLURM_LOCAL_CRED_EXPIRE:-30}"
  local scheduler="SchedulerParameters=sched_interval=5,bf_interval=5"
  nodes="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
  if [[ $NODES -gt 1 ]]; then
    # The machine split between the nodes; each slurmd has its own spool, pid and log file (%n:
    # the node's name). A node that stops answering is DOWN after SlurmdTimeout seconds, which
    # is when SLURM requeues its jobs.
    local n
    n=$(nproc)
    cpus=${SLURM_LOCAL_CPUS:-$(( n / NODES > 0 ? n / NODES : 1 ))}
    mem=${SLURM_LOCAL_MEM_MB:-$(( mem / NODES ))}
    cluster=hydrabot-nodes ctl_addr=$CTL_ADDR slurmd_timeout=${SLURM_LOCAL_SLURMD_TIMEOUT:-20} per_node="-%n"
    nodes=""
    for i in $(seq "$NODES"); do
      nodes+="NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$cpus RealMemory=$mem State=UNKNOWN"
      [[ $i == "$NODES" ]] || nodes+=$'\n'
    done
  fi
  cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a $NODES-node cluster on $host.
ClusterName=$cluster
SlurmctldHost=$host($ctl_addr)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket$auth_info
CryptoType=crypto/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d$per_node
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd$per_node.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd$per_node.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
$scheduler
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
SlurmdTimeout=$slurmd_timeout
$nodes
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
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

# ---------------------------------------------------------------- namespaced nodes (NODES > 1)

load_net() {  # K, BRIDGE, CTL_ADDR and NODES of this cluster's nodes, from $NET_ENV
  [[ -f $NET_ENV ]] || die "$DIR has no namespaced nodes ($NET_ENV is missing); start it with SLURM_LOCAL_NODES=2"
  # shellcheck disable=SC1090
  source "$NET_ENV"
}

ns_pids() { ip netns pids "$1" 2>/dev/null | xargs || true; }

net_teardown() {  # net_teardown K: kill what runs in subnet K's namespaces, remove them and the bridge
  local k=$1 ns pids
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^hbm$k-" || true); do
    pids=$(ns_pids "$ns")
    if [[ -n $pids ]]; then
      kill $pids 2>/dev/null || true
      for _ in $(seq 50); do [[ -z $(ns_pids "$ns") ]] && break; sleep 0.1; done
      pids=$(ns_pids "$ns")
      [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
      for _ in $(seq 50); do [[ -z $(ns_pids "$ns") ]] && break; sleep 0.1; done
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  # The veth pairs explicitly: a deleted namespace takes its end along only when the kernel gets to
  # it, and a `start` right after would find the names taken.
  local veth
  for veth in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^hbm${k}n[0-9]+$" || true); do
    ip link del "$veth" 2>/dev/null || true
  done
  if ip link show "hbm${k}br" >/dev/null 2>&1; then ip link del "hbm${k}br" || true; fi
  rm -f "$NET_REGISTRY/$k"
}

subnet_in_use() {  # 10.213.$1.0/24 has an address or route on this host, its names are taken, or a cluster claimed it
  [[ -e $NET_REGISTRY/$1 ]] || ip -4 -o addr show | grep -q " 10\.213\.$1\." \
    || ip -4 route show | grep -q "^10\.213\.$1\." || ip -o link show | grep -q ": hbm$1\(br\|n[0-9]\)" \
    || ip netns list | grep -q "^hbm$1-"
}

net_up() {
  [[ $(id -u) == 0 ]] || die "namespaced nodes (SLURM_LOCAL_NODES=$NODES) need root: ip netns, veth pairs, a bridge"
  [[ -n "$(find_bin ip)" ]] || die "iproute2's ip is missing; install iproute2"
  command -v unshare >/dev/null && command -v nsenter >/dev/null || die "unshare/nsenter (util-linux) are missing"
  [[ $NODES -le 99 ]] || die "SLURM_LOCAL_NODES=$NODES: at most 99 nodes"
  mkdir -p "$NET_REGISTRY" "$DIR"
  local k f owner
  exec 9>"$NET_REGISTRY/.lock"
  flock 9
  for f in "$NET_REGISTRY"/*; do  # subnets whose cluster is gone (a killed test run removed its state dir)
    [[ -f $f ]] || continue
    owner=$(cat "$f") k=$(basename "$f")
    if ! grep -qx "K=$k" "$owner/net.env" 2>/dev/null; then
      log "removing the stale nodes of subnet 10.213.$k.0/24 (cluster $owner is gone)"
      net_teardown "$k"
    fi
  done
  K=""
  for k in $(seq 1 254); do
    if ! subnet_in_use "$k"; then K=$k; break; fi
  done
  [[ -n $K ]] || die "no free /24 in 10.213.0.0/16 for the nodes"
  echo "$DIR" >"$NET_REGISTRY/$K"
  BRIDGE=hbm${K}br CTL_ADDR=10.213.$K.1
  printf 'K=%s\nBRIDGE=%s\nCTL_ADDR=%s\nNODES=%s\n' "$K" "$BRIDGE" "$CTL_ADDR" "$NODES" >"$NET_ENV"
  flock -u 9
  exec 9>&-
  ip link add "$BRIDGE" type bridge
  echo 1 >"/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6" 2>/dev/null || true  # IPv4 only, no router solicitations
  ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  {
    echo "127.0.0.1 localhost"
    echo "$CTL_ADDR $(hostname -s)"
    for i in $(seq "$NODES"); do echo "$(node_addr "$i") $(node_name "$i")"; done
    # the same addresses as IPv4-mapped IPv6 ones, which dual-stack servers (torch's TCPStore) see
    # their peers as and look up by name
    for i in $(seq "$NODES"); do echo "::ffff:$(node_addr "$i") $(node_name "$i")"; done
  } >"$DIR/hosts"
  local ns veth
  for i in $(seq "$NODES"); do
    ns=$(node_ns "$i") veth=$(node_veth "$i")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name "${veth}p"
    echo 1 >"/proc/sys/net/ipv6/conf/$veth/disable_ipv6" 2>/dev/null || true
    ip link set "${veth}p" netns "$ns"
    ip -n "$ns" link set "${veth}p" name eth0
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6' 2>/dev/null || true
    ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
  done
}

node_index() {  # hbn2 -> 2
  local i=${1#hbn}
  if [[ ! $i =~ ^[0-9]+$ ]] || (( i < 1 || i > NODES )); then
    die "no node '$1' here (nodes: $(for j in $(seq "$NODES"); do node_name "$j"; done | xargs))"
  fi
  echo "$i"
}

node_start() {  # slurmd of node i, in its namespaces: its network, hostname and /etc/hosts
  local i=$1 name pidfile
  name=$(node_name "$i")
  pidfile="$DIR/run/slurmd-$name.pid"
  pid_alive "$pidfile" && return
  mkdir -p "$DIR/spool/d-$name"
  # nsenter enters the node's network namespace (not `ip netns exec`, whose fresh /sys hides the
  # cgroup mounts slurmd reads); unshare adds a UTS namespace (the hostname) and a mount namespace
  # (this cluster's hosts file on /etc/hosts, for this node only); slurmd then daemonizes inside
  # them, and every job step it starts runs there too.
  timeout 60 nsenter --net="/run/netns/$(node_ns "$i")" unshare --uts --mount --propagation private \
    sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec "$3" -f "$4" -N "$2"' \
    sh "$DIR/hosts" "$name" "$(find_bin slurmd)" "$CONF"
  for _ in $(seq 50); do pid_alive "$pidfile" && return; sleep 0.1; done
  die "slurmd of $name did not start; see $DIR/log/slurmd-$name.log"
}

cmd_node_down() {
  load_net
  local i ns pids
  i=$(node_index "${1:-}")
  ns=$(node_ns "$i")
  # The link first, so the node falls silent (no TCP reset reaches its peers, as when a machine
  # loses power); then everything that ran on it.
  ip link set "$(node_veth "$i")" down
  pids=$(ns_pids "$ns")
  [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
  for _ in $(seq 50); do [[ -z $(ns_pids "$ns") ]] && break; sleep 0.1; done
  [[ -z $(ns_pids "$ns") ]] || die "processes of $(node_name "$i") survived SIGKILL: $(ns_pids "$ns")"
  rm -f "$DIR/run/slurmd-$(node_name "$i").pid"
  log "$(node_name "$i") is down (killed: ${pids:-nothing})"
}

cmd_node_up() {
  load_net
  local i
  i=$(node_index "${1:-}")
  ip link set "$(node_veth "$i")" up
  export SLURM_CONF=$CONF
  node_start "$i"
  log "$(node_name "$i") is up (slurmd pid $(cat "$DIR/run/slurmd-$(node_name "$i").pid"))"
}

# ---------------------------------------------------------------- commands

slurmd_pidfiles() {
  if [[ $NODES -gt 1 ]]; then
    for i in $(seq "$NODES"); do echo "$DIR/run/slurmd-$(node_name "$i").pid"; done
  else
    echo "$DIR/run/slurmd.pid"
  fi
}

cluster_running() {
  pid_alive "$DIR/run/slurmctld.pid" || return 1
  local f
  for f in $(slurmd_pidfiles); do pid_alive "$f" || return 1; done
}

wait_for_nodes() {  # every node idle (or already busy); a node that came up DOWN is resumed
  local states="" node state
  for _ in $(seq 60); do
    states=$(timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    if [[ $(grep -c -E ' (idle|mixed|alloc)' <<<"$states") -ge $NODES ]]; then return 0; fi
    while read -r node state; do
      if [[ $state == down* || $state == drain* ]]; then
        timeout 10 scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
      fi
    done <<<"$states"
    sleep 0.5
  done
  log "node states: $(tr '\n' ';' <<<"$states")"
  return 1
}

cmd_start() {
  install_packages
  if [[ -f $NET_ENV ]]; then
    if cluster_running; then load_net; log "already running (SLURM_CONF=$CONF)"; echo "$CONF"; return; fi
    cmd_stop  # what a failed or killed start left behind
  elif [[ $NODES -le 1 ]] && cluster_running; then
    log "already running (SLURM_CONF=$CONF)"; echo "$CONF"; return
  fi
  [[ $NODES -le 1 ]] || net_up
  write_conf
  start_munge
  export SLURM_CONF=$CONF
  pid_alive "$DIR/run/slurmctld.pid" || timeout 60 "$(find_bin slurmctld)" -f "$CONF" -i
  if [[ $NODES -gt 1 ]]; then
    for i in $(seq "$NODES"); do node_start "$i"; done
  else
    pid_alive "$DIR/run/slurmd.pid" || timeout 60 "$(find_bin slurmd)" -f "$CONF"
  fi
  if wait_for_nodes; then
    log "up: $(timeout 10 sinfo -h -N -o '%N %T' | xargs), partition $PARTITION (SLURM_CONF=$CONF)"
  else
    log "the nodes did not come up; last log lines:"
    tail -n 20 "$DIR"/log/slurm*.log >&2 || true
    cmd_stop; die "the cluster did not come up"
  fi
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
  if [[ -f $NET_ENV ]]; then  # namespaced nodes: their slurmds, then whatever else runs on them
    load_net
    for f in $(slurmd_pidfiles); do stop_pid slurmd "$f"; done
    net_teardown "$K"
    rm -f "$NET_ENV"
  fi
  stop_pid slurmd "$DIR/run/slurmd.pid"
  stop_pid slurmctld "$DIR/run/slurmctld.pid"
  stop_pid munged "$MUNGE_DIR/munged.pid"
  log "stopped"
}

cmd_status() {
  local rc=0 f
  [[ ! -f $NET_ENV ]] || load_net
  if pid_alive "$DIR/run/slurmctld.pid"; then echo "slurmctld: running (pid $(cat "$DIR/run/slurmctld.pid"))"
  else echo "slurmctld: stopped"; rc=3; fi
  for f in $(slurmd_pidfiles); do
    if pid_alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "$(basename "$f" .pid): stopped"; rc=3; fi
  done
  if pid_alive "$MUNGE_DIR/munged.pid"; then echo "munged: running (pid $(cat "$MUNGE_DIR/munged.pid"))"
  else echo "munged: stopped"; rc=3; fi
  if [[ -f $NET_ENV ]]; then
    echo "network: bridge $BRIDGE ($CTL_ADDR/24), namespaces $(ip netns list | awk '{print $1}' | grep "^hbm$K-" | xargs)"
  fi
  if pid_alive "$DIR/run/slurmctld.pid"; then
    export SLURM_CONF=$CONF
    echo "SLURM_CONF=$CONF"
    sinfo -N || true
    squeue || true
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  conf) echo "$CONF" ;;
  node-down) cmd_node_down "${2:-}" ;;
  node-up) cmd_node_up "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|conf|node-down NODE|node-up NODE" >&2; exit 2 ;;
esac
