#!/usr/bin/env bash
# Stop the MLflow tracking server started by server/start_mlflow_server.sh: the mlflow server with its
# workers, then its PostgreSQL cluster. The data stay in the data folder (runs, users, artifacts), for
# the next start. Stopping a stopped server succeeds.
# Usage: bash server/stop_mlflow_server.sh   (environment: IFRVIS_MLFLOW_DIR, IFRVIS_PG_BIN, as for the start)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${IFRVIS_MLFLOW_DIR:-$(dirname "$HERE")/outputs/mlflow-server}"
PG_BIN="${IFRVIS_PG_BIN:-}"
PG_OS_USER="${IFRVIS_PG_OS_USER:-postgres}"

log() { echo "[stop_mlflow_server] $*" >&2; }
# shellcheck source=../scripts/daemon_helpers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/daemon_helpers.sh"


# stop_group NAME PID: SIGTERM to the process group PID leads, up to 30 s, then SIGKILL.
stop_group() {
    local name="$1" pid="$2" waited=0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 60)); then
            log "$name did not stop in 30 s: killing it"
            kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

as_pg() {
    if ((EUID == 0)); then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

main() {
    if [[ ! -d "$DIR" ]]; then
        echo "MLflow server stopped (no data folder $DIR)"
        return 0
    fi
    DIR="$(cd "$DIR" && pwd)"
    exec 9>"$DIR/.server.lock"
    flock -w 240 9 || fail "another start or stop holds $DIR/.server.lock"

    local pid_file="$DIR/mlflow.pid" pid
    if [[ -f "$pid_file" ]]; then
        pid="$(cat "$pid_file")"
        # Only the mlflow process the start recorded, not another that reuses its number.
        if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q mlflow; then
            stop_group "mlflow server" "$pid"
        fi
        rm -f "$pid_file" "$DIR/mlflow.state"
    fi

    if [[ -f "$DIR/pg/postmaster.pid" ]]; then
        if [[ -z "$PG_BIN" ]]; then
            PG_BIN=/usr/lib/postgresql/15/bin
            [[ -x "$PG_BIN/pg_ctl" ]] \
                || PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
        fi
        [[ -x "$PG_BIN/pg_ctl" ]] || fail "PostgreSQL's pg_ctl not found (set IFRVIS_PG_BIN)"
        if as_pg "$PG_BIN/pg_ctl" status -D "$DIR/pg" >/dev/null 2>&1; then
            log "stopping PostgreSQL"
            as_pg "$PG_BIN/pg_ctl" stop -D "$DIR/pg" -m fast -w -t 60 >>"$DIR/logs/pg_ctl.log" 2>&1 \
                || fail "PostgreSQL did not stop" "$DIR/logs/postgresql.log"
        fi
    fi
    echo "MLflow server stopped (data kept in $DIR)"
}

main "$@"
