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
set -euo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
MARKER="# written by mt5study scripts/slurm/start_local_cluster.sh"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/mt5study-slurm  # pid files and the "we started munged" flag
WAIT_S=${MT5_SLURM_WAIT:-60}

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

mkdir -p "$(dirname "$CONF")" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
cat >"$CONF" <<EOF
$MARKER on $(date -Is)
# One node ($NODE), one partition. Plugins that need no cgroups, so it runs in containers.
ClusterName=mt5study
SlurmctldHost=$NODE(127.0.0.1)
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
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
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

# 6. Wait for the node to be idle (a node left down/drained by an earlier run is resumed).
state=""
for _ in $(seq $(( WAIT_S * 5 ))); do
  state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1)
  case $state in
    idle|mixed|allocated) break ;;
    down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
case $state in
  idle|mixed|allocated) ;;
  *) die "node $NODE is '$state', not idle (see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log)" ;;
esac
say "cluster up in $(( $(date +%s) - t0 )) s: $(sinfo -h -o '%P %a %D %T %c cpus %m MB')"
