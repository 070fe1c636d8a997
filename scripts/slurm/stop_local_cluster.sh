#!/usr/bin/env bash
# Stop the cluster that start_local_cluster.sh started: every slurmd, slurmctld and (unless
# --keep-munge, or munged was not ours) munged, each by the pid in its pid file, then remove the
# namespace nodes' network, if any. Job state and logs stay under /var/spool and /var/log/slurm.
# Safe to run when nothing is running.
set -euo pipefail

RUN_DIR=/run/mt5study-slurm
keep_munge=0
[[ ${1:-} == --keep-munge ]] && keep_munge=1

say() { echo "stop_local_cluster: $*"; }

# stop NAME PIDFILE: TERM the pid if it is still that program, wait up to 15 s, then KILL.
stop() {
  local name=$1 pidfile=$2 pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if [[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]] && [[ $(</proc/"$pid"/comm) == "$name" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do [[ -e /proc/$pid ]] || break; sleep 0.2; done
    if [[ -e /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}

stop slurmd "$RUN_DIR/slurmd.pid"  # written by earlier versions of the start script
for pidfile in "$RUN_DIR"/slurmd-*.pid; do [[ -e $pidfile ]] && stop slurmd "$pidfile"; done
stop slurmctld "$RUN_DIR/slurmctld.pid"
# The namespace nodes' network (MT5_SLURM_NETNS_NODES): namespaces, their hosts files, the bridge.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^mt5n[0-9]+$/ {print $1}'); do
  ip netns del "$ns" && rm -rf "/etc/netns/$ns" && say "removed namespace node $ns"
done
if ip link show mt5br0 >/dev/null 2>&1; then ip link del mt5br0 && say "removed bridge mt5br0"; fi
if (( ! keep_munge )) && [[ -e $RUN_DIR/munged.ours ]]; then
  stop munged /run/munge/munged.pid
  rm -f "$RUN_DIR/munged.ours"
fi
