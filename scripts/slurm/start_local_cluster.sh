#!/usr/bin/env bash
# Start a real one-node Slurm cluster on this machine: munged, slurmctld and slurmd run as plain
# daemons (no systemd), one node with the machine's own CPUs and memory, one partition `debug`.
# It is what tests/test_slurm_cluster.py and CI submit to; a laptop or container can use it to
# try `mt5study slurm submit` before a real cluster.
#
#   sudo bash scripts/slurm/start_local_cluster.sh      # installs Debian packages if missing
#   sudo bash scripts/slurm/stop_local_cluster.sh
#
# Idempotent: a second run stops the daemons it started (by their pid files) and starts them
# again with a freshly written slurm.conf; job state in StateSaveLocation is kept.
# Debian/Ubuntu only (Debian 12 ships Slurm 22.05). Must run as root (apt, daemons as root).
#
# Environment:
#   SLURM_CONF            config file to write (default /etc/slurm/slurm.conf). A file there
#                         that this script did not write is left alone unless MT5_SLURM_FORCE=1.
#   MT5_SLURM_CLEAR=1     start slurmctld with -c (forget all jobs of earlier runs)
#   MT5_SLURM_WAIT=60     seconds to wait for the node to become idle
#   MT5_SLURM_NETNS_NODES=N  also start N more nodes mt5n1..mt5nN in partition `multi`, each a
#                         slurmd in its own network and UTS namespace (own address 10.77.0.1X on
#                         bridge mt5br0, own hostname), so that jobs can span N "machines" here.
#                         Default 0: the one node only. Needs `ip` (iproute2) and unshare.
set -euo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
MARKER="# written by mt5study scripts/slurm/start_local_cluster.sh"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/mt5study-slurm  # pid files and the "we started munged" flag
WAIT_S=${MT5_SLURM_WAIT:-60}
NETNS_NODES=${MT5_SLURM_NETNS_NODES:-0}
BRIDGE=mt5br0 NET=10.77.0  # the namespaces' bridge and /24: controller .1, node i at .(10+i)

say() { echo "start_local_cluster: $*"; }
die() { echo "start_local_cluster: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs slurmctld/slurmd as root)"
t0=$(date +%s)

# 1. Packages. CI starts from a clean Debian, so install what is missing.
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
if (( NETNS_NODES > 0 )); then command -v ip >/dev/null || need+=(iproute2); fi
if (( ${#need[@]} )); then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: Debian/Ubuntu only"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Stop the packages' maintainer scripts from starting daemons themselves (no init here, and
  # this script starts them with its own config); Docker images already carry such a file.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  if (( own_policy )); then trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if (( own_policy )); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# 2. Stop what an earlier run of this script started (restart cleanly), unless the config in
# place belongs to someone else: then touch nothing.
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF" && [[ ${MT5_SLURM_FORCE:-0} != 1 ]]; then
  die "$CONF exists and was not written by this script: refusing to overwrite (MT5_SLURM_FORCE=1 to do it)"
fi
bash "$(dirname "${BASH_SOURCE[0]}")/stop_local_cluster.sh" --keep-munge >/dev/null

# 3. slurm.conf, from what slurmd sees of this machine.
NODE=$(hostname -s)
# `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24031" then "UpTime=..."; keep the hardware fields.
hw=$(slurmd -C | grep '^NodeName=' | sed -E 's/^NodeName=[^ ]+ //; s/ *UpTime=.*//')
[[ $hw == *CPUs=* && $hw == *RealMemory=* ]] || die "could not read the hardware from 'slurmd -C': $hw"
cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$hw")
mem_mb=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
def_mem=$(( mem_mb / cpus ))  # MB per CPU for jobs that do not ask (--mem) for memory

# 3b. Namespace nodes: a bridge on the host (the controller's side) and, per node, a network
# namespace joined to it by a veth pair, and an /etc/netns/<node>/hosts that is mounted over
# /etc/hosts for that node's slurmd (step 5), so every node resolves every other by name.
ctl_addr=127.0.0.1
extra_nodes="" multi=""
if (( NETNS_NODES > 0 )); then
  ctl_addr=$NET.1
  ip link add "$BRIDGE" type bridge
  ip addr add "$ctl_addr/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  names=()
  for i in $(seq "$NETNS_NODES"); do
    n=mt5n$i; names+=("$n")
    ip netns add "$n"
    ip link add "mt5v$i" type veth peer name eth0 netns "$n"
    ip link set "mt5v$i" master "$BRIDGE" up
    ip -n "$n" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" link set lo up
    extra_nodes+="NodeName=$n NodeHostname=$n NodeAddr=$NET.$((10 + i)) $hw State=UNKNOWN"$'\n'
  done
  for n in "${names[@]}"; do
    mkdir -p "/etc/netns/$n"
    { grep -vE '[[:space:]]mt5n[0-9]+$' /etc/hosts || true; echo "$ctl_addr $NODE"
      for i in $(seq "$NETNS_NODES"); do echo "$NET.$((10 + i)) mt5n$i"; done; } >"/etc/netns/$n/hosts"
  done
  multi="PartitionName=multi Nodes=mt5n[1-$NETNS_NODES] Default=NO MaxTime=INFINITE State=UP"
  say "namespace nodes ${names[*]} on $BRIDGE ($NET.0/24)"
fi

mkdir -p "$(dirname "$CONF")" "$STATE_DIR" "$SPOOL_DIR/$NODE" "$LOG_DIR" "$RUN_DIR"
cat >"$CONF" <<EOF
$MARKER on $(date -Is)
# One node ($NODE), one partition. Plugins that need no cgroups, so it runs in containers.
ClusterName=mt5study
SlurmctldHost=$NODE($ctl_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# Seconds a job credential lives; also how long a requeued job waits before it may start
# again (default 120 s: too slow for tests). Slurm's minimum is 5.
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# One line per finished job (state, exit code, start/end): what tests read instead of sacct.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
SchedulerType=sched/backfill
# Seconds between scheduling passes (defaults 60 and 30): a requeued job starts as soon as it
# is eligible again, not up to half a minute later. Cheap on one node.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
JobRequeue=1
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job ends (time limit, scancel): checkpoint time.
KillWait=30
# Seconds a finished job stays visible to scontrol/squeue.
MinJobAge=600
MaxArraySize=10001
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$STATE_DIR
# %n: the node name, so several slurmd (namespace nodes) keep apart.
SlurmdSpoolDir=$SPOOL_DIR/%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
${extra_nodes}PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
$multi
EOF
say "wrote $CONF (node $NODE: $hw)"

# 4. munge: a key, then munged as the munge user, unless a working one is already up.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key"; else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
  fi
  chown munge:munge "$key" /etc/munge
  chmod 0400 "$key"
  chmod 0700 /etc/munge
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$RUN_DIR/munged.ours"
  for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  (munge -n | unmunge) >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"
  say "munged started"
fi

# 5. slurmctld, then slurmd once the controller answers.
export SLURM_CONF=$CONF
clear=(); [[ ${MT5_SLURM_CLEAR:-0} == 1 ]] && clear=(-c)
slurmctld "${clear[@]}"
for _ in $(seq $(( WAIT_S * 5 ))); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
scontrol ping | grep -q 'is UP' || die "slurmctld is not up (see $LOG_DIR/slurmctld.log)"
slurmd
# Each namespace node: its slurmd (and every job step it starts) runs in the node's network
# namespace (its own address), a new UTS namespace (its own hostname) and a new mount namespace
# in which only /etc/hosts differs (not `ip netns exec`: it remounts /sys without the cgroup
# file systems that slurmd reads).
for i in $(seq "$NETNS_NODES"); do
  n=mt5n$i
  mkdir -p "$SPOOL_DIR/$n"
  nsenter --net="/run/netns/$n" -- unshare --uts --mount -- \
    sh -c "mount --bind /etc/netns/$n/hosts /etc/hosts && hostname $n && exec slurmd -N $n"
done

# 6. Wait for every node to be idle (a node left down/drained by an earlier run is resumed).
for node in "$NODE" $(for i in $(seq "$NETNS_NODES"); do echo "mt5n$i"; done); do
  state=""
  for _ in $(seq $(( WAIT_S * 5 ))); do
    state=$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1)
    case $state in
      idle|mixed|allocated) break ;;
      down*|drain*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  case $state in
    idle|mixed|allocated) ;;
    *) die "node $node is '$state', not idle (see $LOG_DIR/slurmd-$node.log and $LOG_DIR/slurmctld.log)" ;;
  esac
done
say "cluster up in $(( $(date +%s) - t0 )) s: $(sinfo -h -o '%P %a %D %T %c cpus %m MB')"
