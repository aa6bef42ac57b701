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
# shellcheck source=mlflow_process.sh
source "$HERE/mlflow_process.sh"

as_pg() {
    if ((EUID == 0)); then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

main() {
    case "${1:-}" in  # it takes no argument: a mistyped one must not stop a live server
        "") ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "stop_mlflow_server: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    if [[ ! -d "$DIR" ]]; then
        echo "MLflow server stopped (no data folder $DIR)"
        return 0
    fi
    DIR="$(cd "$DIR" && pwd)"
    exec 9>"$DIR/.server.lock"
    flock -w 240 9 || fail "another start or stop holds $DIR/.server.lock"

    local pid_file="$DIR/mlflow.pid" state_file="$DIR/mlflow.state" host port
    host="$(sed -n 's/^HOST=//p' "$state_file" 2>/dev/null || true)"
    port="$(sed -n 's/^PORT=//p' "$state_file" 2>/dev/null || true)"
    if [[ -f "$pid_file" ]]; then
        # The whole group, even when its leader (the pid recorded) is gone and its workers still serve.
        stop_server_group "$(cat "$pid_file")"
        rm -f "$pid_file" "$state_file"
    fi
    # "Stopped" only once the port no longer answers.
    if [[ -n "$port" ]] && ! wait_for 10 "port $port to close" port_closed "$(local_address "$host")" "$port"; then
        fail "$(local_address "$host"):$port still answers after the mlflow server stopped: another program holds it"
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
