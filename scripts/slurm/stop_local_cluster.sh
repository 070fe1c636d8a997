#!/usr/bin/env bash
# Stop the one-node cluster that start_local_cluster.sh started: slurmd, slurmctld and (unless
# --keep-munge, or munged was not ours) munged, each by the pid in its pid file. Job state and
# logs stay under /var/spool and /var/log/slurm. Safe to run when nothing is running.
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

stop slurmd "$RUN_DIR/slurmd.pid"
stop slurmctld "$RUN_DIR/slurmctld.pid"
if (( ! keep_munge )) && [[ -e $RUN_DIR/munged.ours ]]; then
  stop munged /run/munge/munged.pid
  rm -f "$RUN_DIR/munged.ours"
fi
