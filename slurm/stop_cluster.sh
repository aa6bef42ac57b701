#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by slurm/start_cluster.sh:
# slurmd, slurmctld, slurmdbd, MariaDB and munged, in that order. Stopping a stopped cluster succeeds.
set -euo pipefail

RUN_DIR=/run/slurm

log() { echo "[stop_cluster] $*" >&2; }

# stop_pid NAME PID: sends SIGTERM, waits up to 30 s, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" waited=0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 60)); then
            log "$name did not stop in 30 s: killing it"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

# stop_pid_file NAME PID_FILE
stop_pid_file() {
    local name="$1" pid_file="$2"
    [[ -f "$pid_file" ]] || return 0
    stop_pid "$name" "$(cat "$pid_file")"
    rm -f "$pid_file"
}

[[ $EUID -eq 0 ]] || { echo "slurm/stop_cluster.sh must run as root" >&2; exit 1; }
stop_pid_file slurmd "$RUN_DIR/slurmd.pid"
stop_pid_file slurmctld "$RUN_DIR/slurmctld.pid"
stop_pid_file slurmdbd "$RUN_DIR/slurmdbd.pid"
stop_pid_file mariadb /run/mysqld/mysqld.pid
stop_pid_file munged /run/munge/munged.pid
echo "Slurm cluster stopped"
