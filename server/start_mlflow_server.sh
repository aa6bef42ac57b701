#!/usr/bin/env bash
# Start the MLflow tracking server of a cluster (docs/cluster_store.md): its own PostgreSQL cluster,
# listening on 127.0.0.1 only, as the backend store; artifacts proxied by the server (runs log to
# mlflow-artifacts:, so compute nodes need no shared path); MLflow's basic-auth app with the users of
# a file the operator writes. On any host but loopback the server requires that file, or --insecure.
# Idempotent: with the server up it only syncs the users file and prints its status line.
#
# Usage: bash server/start_mlflow_server.sh [--host HOST] [--port PORT] [--insecure]
#   --host        interface to bind (default $IFRVIS_MLFLOW_HOST or 127.0.0.1; 0.0.0.0 for every one)
#   --port        the server's port (default $IFRVIS_MLFLOW_PORT or 5000)
#   --insecure    allow a host other than loopback without basic auth (anyone reaching it can write)
# Environment:
#   IFRVIS_MLFLOW_DIR                 data folder (default <project>/outputs/mlflow-server)
#   IFRVIS_MLFLOW_USERS               users file, name:password a line, the first one the admin
#                                     (default <data folder>/users; basic auth is on when it exists)
#   IFRVIS_MLFLOW_DEFAULT_PERMISSION  what users may do in experiments others made (default EDIT)
#   IFRVIS_MLFLOW_WORKERS             the server's worker processes (default 4)
#   IFRVIS_MLFLOW_ALLOWED_HOSTS       extra Host headers the server accepts (comma-separated)
#   IFRVIS_PG_PORT                    PostgreSQL's port on 127.0.0.1 (default 5433)
#   IFRVIS_PG_BIN                     PostgreSQL's programs (default /usr/lib/postgresql/15/bin)
#   IFRVIS_PG_OS_USER                 who runs PostgreSQL when root starts it (default postgres)
#   IFRVIS_VENV                       the virtual environment with mlflow (default <project>/.venv)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(dirname "$HERE")"
HOST="${IFRVIS_MLFLOW_HOST:-127.0.0.1}"
PORT="${IFRVIS_MLFLOW_PORT:-5000}"
INSECURE=0
DIR="${IFRVIS_MLFLOW_DIR:-$PROJECT/outputs/mlflow-server}"
PG_PORT="${IFRVIS_PG_PORT:-5433}"
PG_BIN="${IFRVIS_PG_BIN:-}"
WORKERS="${IFRVIS_MLFLOW_WORKERS:-4}"
DEFAULT_PERMISSION="${IFRVIS_MLFLOW_DEFAULT_PERMISSION:-EDIT}"
VENV="${IFRVIS_VENV:-$PROJECT/.venv}"
DB_USER=mlflow
DB_NAME=mlflow
AUTH_DB_NAME=mlflow_auth
STARTED_AT=$SECONDS

log() { echo "[start_mlflow_server] $*" >&2; }
# shellcheck source=../scripts/daemon_helpers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/daemon_helpers.sh"
# shellcheck source=mlflow_process.sh
source "$HERE/mlflow_process.sh"

# usage_error MESSAGE: one line, nothing started.
usage_error() {
    echo "start_mlflow_server: $*" >&2
    exit 2
}



parse_args() {
    while (($#)); do
        case "$1" in
            --host) HOST="${2:?--host needs a value}"; shift 2 ;;
            --host=*) HOST="${1#*=}"; shift ;;
            --port) PORT="${2:?--port needs a value}"; shift 2 ;;
            --port=*) PORT="${1#*=}"; shift ;;
            --insecure) INSECURE=1; shift ;;
            -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) usage_error "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ "$PORT" =~ ^[0-9]+$ ]] || usage_error "--port '$PORT' is not a number"
    [[ "$PG_PORT" =~ ^[0-9]+$ ]] || usage_error "IFRVIS_PG_PORT '$PG_PORT' is not a number"
    [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || usage_error "IFRVIS_MLFLOW_WORKERS '$WORKERS' is not a count"
    [[ "$DEFAULT_PERMISSION" =~ ^(READ|USE|EDIT|MANAGE|NO_PERMISSIONS)$ ]] \
        || usage_error "IFRVIS_MLFLOW_DEFAULT_PERMISSION '$DEFAULT_PERMISSION' is none of READ USE EDIT MANAGE NO_PERMISSIONS"
}

is_loopback() { [[ "$1" =~ ^(localhost|127\.[0-9.]+|::1|\[::1\])$ ]]; }

# The address compute nodes use, for the status line.
public_url() {
    local host="$HOST"
    case "$HOST" in
        0.0.0.0 | "" | "*" | :: | "[::]") host="$(hostname -f 2>/dev/null || hostname)" ;;
        *:*) host="[$HOST]" ;;
    esac
    echo "http://$host:$PORT"
}

# --------------------------------------------------------------------------------------- PostgreSQL
# PostgreSQL refuses to run as root: root runs it as the system user 'postgres' of Debian's package.
as_pg() {
    if ((EUID == 0)); then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

find_pg() {
    if [[ -z "$PG_BIN" ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
        if [[ ! -x "$PG_BIN/initdb" ]]; then
            local newest
            newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
            [[ -n "$newest" ]] && PG_BIN="$newest"
        fi
    fi
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" && -x "$PG_BIN/psql" ]]
}

install_pg() {
    find_pg && return 0
    ((EUID == 0)) || fail "PostgreSQL not found in $PG_BIN (install Debian's postgresql package, or set IFRVIS_PG_BIN)"
    log "installing postgresql"
    # Keep the package's maintainer scripts from starting the system's cluster (no init system here).
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local status=0
    {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends postgresql 9>&-
    } >"$LOG_DIR/apt.log" 2>&1 || status=$?
    ((added_policy)) && rm -f /usr/sbin/policy-rc.d
    ((status == 0)) || fail "apt-get install postgresql failed (exit $status)" "$LOG_DIR/apt.log"
    PG_BIN=""
    find_pg || fail "postgresql installed, but no PostgreSQL programs under /usr/lib/postgresql"
}

pg_running() { as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; }

# psql as the cluster's superuser, over the socket in a folder only the cluster's owner can open.
pg_sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET" -p "$PG_PORT" -U postgres "$@"; }

init_pg() {
    if ((EUID == 0)); then
        id -u "$PG_OS_USER" >/dev/null 2>&1 || fail "no system user '$PG_OS_USER' to run PostgreSQL as"
        # The cluster's owner must reach its folders from /.
        if ! runuser -u "$PG_OS_USER" -- test -x "$DIR"; then
            fail "user '$PG_OS_USER' cannot enter $DIR (a parent folder is closed to others): choose an IFRVIS_MLFLOW_DIR it can reach"
        fi
    fi
    if [[ ! -s "$PG_PASSFILE" ]]; then
        # The password of the database role that MLflow connects as, in libpq's password file format.
        (umask 077 && printf '127.0.0.1:*:*:%s:%s\n' "$DB_USER" "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" \
            >"$PG_PASSFILE")
    fi
    install -d -m 700 "$PG_SOCKET"
    touch "$LOG_DIR/postgresql.log"
    if ((EUID == 0)); then
        chown "$PG_OS_USER:" "$PG_SOCKET" "$LOG_DIR/postgresql.log"
    fi
    [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
    log "initialising the PostgreSQL cluster in $PG_DATA"
    install -d -m 700 "$PG_DATA"
    ((EUID == 0)) && chown "$PG_OS_USER:" "$PG_DATA"
    # Local socket: trust (its folder is closed to others); TCP: passwords only (scram-sha-256).
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOG_DIR/initdb.log" 2>&1 \
        || fail "initdb failed" "$LOG_DIR/initdb.log"
}

start_pg() {
    if pg_running; then
        local port
        port="$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
        [[ "$port" == "$PG_PORT" ]] \
            || fail "PostgreSQL of $PG_DATA already runs on port $port: stop it first (server/stop_mlflow_server.sh)"
        return 0
    fi
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t 60 -l "$LOG_DIR/postgresql.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCKET -c max_connections=200" \
        >>"$LOG_DIR/pg_ctl.log" 2>&1 9>&- \
        || fail "PostgreSQL did not start (is 127.0.0.1:$PG_PORT taken? set IFRVIS_PG_PORT)" \
            "$LOG_DIR/postgresql.log"
    wait_for 30 "PostgreSQL" "$PG_BIN/pg_isready" -q -h "$PG_SOCKET" -p "$PG_PORT" \
        || fail "PostgreSQL does not answer on $PG_SOCKET" "$LOG_DIR/postgresql.log"
}

pg_answers() { pg_running && "$PG_BIN/pg_isready" -q -h "$PG_SOCKET" -p "$PG_PORT"; }

# Both databases take a query as the role MLflow connects as, over TCP with its password.
check_databases() {
    local database
    for database in "$DB_NAME" "$AUTH_DB_NAME"; do
        PGPASSFILE="$PG_PASSFILE" "$PG_BIN/psql" -X -q -tA -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" \
            -d "$database" -c 'SELECT 1' >/dev/null 2>>"$LOG_DIR/psql.log" \
            || fail "the database $database does not answer on 127.0.0.1:$PG_PORT" "$LOG_DIR/psql.log" \
                "$LOG_DIR/postgresql.log"
    done
}

# The role MLflow connects as (its password from $PG_PASSFILE), its store and basic auth's database.
prepare_databases() {
    local password database
    password="$(cut -d: -f5- "$PG_PASSFILE")"
    # The password goes in on standard input, not on a command line that `ps` shows.
    pg_sql -d postgres -v role="$DB_USER" >/dev/null 2>>"$LOG_DIR/psql.log" <<SQL \
        || fail "could not create the database role" "$LOG_DIR/psql.log" "$LOG_DIR/postgresql.log"
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \\gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD '$password';
SQL
    for database in "$DB_NAME" "$AUTH_DB_NAME"; do
        pg_sql -d postgres -v db="$database" -v role="$DB_USER" >/dev/null 2>>"$LOG_DIR/psql.log" <<'SQL' \
            || fail "could not create the database $database" "$LOG_DIR/psql.log" "$LOG_DIR/postgresql.log"
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    done
}

# ------------------------------------------------------------------------------------------- MLflow
mlflow_pid() { [[ -f "$PID_FILE" ]] && cat "$PID_FILE"; }
# Its pid file names a live mlflow process (not another that reuses the number).
mlflow_running() {
    local pid
    pid="$(mlflow_pid)" && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q mlflow
}
# health HOST PORT: the server bound to HOST answers on PORT.
health() { curl -fsS --max-time 3 "http://$(local_address "$1"):$2/health" >/dev/null; }
# state KEY: what the running server was started with (HOST, PORT, AUTH).
state() { sed -n "s/^$1=//p" "$STATE_FILE" 2>/dev/null; }

pg_uri() { echo "postgresql://$DB_USER@127.0.0.1:$PG_PORT/$1"; }

write_auth_config() {
    local admin
    admin="$("$VENV/bin/python" "$HERE/mlflow_users.py" check "$USERS")" || exit 1
    (
        umask 077
        cat >"$AUTH_INI.tmp" <<INI
# Written by server/start_mlflow_server.sh at each start (MLFLOW_AUTH_CONFIG_PATH); the users are
# those of $USERS, synced into basic auth's database by server/mlflow_users.py.
[mlflow]
default_permission = $DEFAULT_PERMISSION
database_uri = $(pg_uri "$AUTH_DB_NAME")
admin_username = $admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    )
    mv "$AUTH_INI.tmp" "$AUTH_INI"
    if [[ ! -s "$SECRET_FILE" ]]; then
        # The key that signs the UI's CSRF tokens: one for every worker, kept over restarts.
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$SECRET_FILE")
    fi
}

sync_users() {
    local summary
    summary="$(PGPASSFILE="$PG_PASSFILE" MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI" \
        "$VENV/bin/python" "$HERE/mlflow_users.py" sync "$USERS" "$(pg_uri "$AUTH_DB_NAME")" \
        2>>"$LOG_DIR/users.log")" || fail "could not sync the users of $USERS" "$LOG_DIR/users.log"
    USERS_SUMMARY="$summary"
}

# Host headers the server answers: MLflow's defaults (loopback, private addresses), this machine's
# names, and those of IFRVIS_MLFLOW_ALLOWED_HOSTS (a node's Host header is the name in its URI).
allowed_hosts() {
    local list=("[::1]" "[[]::1]:*" "10.*" "192.168.*" "fc00:*" "fd00:*") name i seen=" "
    for i in $(seq 16 31); do list+=("172.$i.*"); done
    for name in localhost 127.0.0.1 "$(hostname -s 2>/dev/null || true)" "$(hostname -f 2>/dev/null || true)" \
        "$HOST"; do
        [[ -n "$name" && "$name" != 0.0.0.0 && "$name" != *:* && "$seen" != *" $name "* ]] || continue
        seen+="$name "  # the short and full host names are often one name
        list+=("$name" "$name:*")
    done
    local IFS=,
    echo "${list[*]}${IFRVIS_MLFLOW_ALLOWED_HOSTS:+,$IFRVIS_MLFLOW_ALLOWED_HOSTS}"
}

start_mlflow() {
    local address
    address="$(local_address "$HOST")"
    if port_taken "$address" "$PORT"; then
        fail "$address:$PORT is taken by another program (choose another --port)"
    fi
    local args=(server --host "$HOST" --port "$PORT" --workers "$WORKERS"
        --backend-store-uri "$(pg_uri "$DB_NAME")"
        --serve-artifacts --artifacts-destination "$ARTIFACTS")
    local env=(PGPASSFILE="$PG_PASSFILE" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)
    if ((AUTH)); then
        args+=(--app-name basic-auth)
        env+=(MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI" MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$SECRET_FILE")")
    fi
    is_loopback "$HOST" || args+=(--allowed-hosts "$(allowed_hosts)")
    log "starting mlflow server on $HOST:$PORT (workers: $WORKERS)"
    : >"$LOG_DIR/mlflow.log"
    # Its own session, so that stopping it ends the workers with it; the lock's descriptor closed; the
    # secrets in its environment, not on a command line.
    (
        export "${env[@]}"
        exec setsid nohup "$VENV/bin/mlflow" "${args[@]}" </dev/null >>"$LOG_DIR/mlflow.log" 2>&1 9>&-
    ) &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + 180))
    until health "$HOST" "$PORT" 2>/dev/null; do
        mlflow_running || fail "mlflow server exited" "$LOG_DIR/mlflow.log"
        ((SECONDS < deadline)) || fail "mlflow server does not answer on $address:$PORT after 180s" "$LOG_DIR/mlflow.log"
        sleep 0.5
    done
    printf 'HOST=%s\nPORT=%s\nAUTH=%s\n' "$HOST" "$PORT" "$AUTH_WORD" >"$STATE_FILE"
}

print_status() {
    local access="basic auth: $USERS_SUMMARY"
    ((AUTH)) || access="no authentication"
    echo "MLflow server up: $(public_url) ($access), runs in PostgreSQL $(pg_uri "$DB_NAME")," \
        "artifacts proxied to $ARTIFACTS [$((SECONDS - STARTED_AT))s]"
}

main() {
    parse_args "$@"
    command -v curl >/dev/null || usage_error "curl is needed (apt-get install curl)"
    USERS="${IFRVIS_MLFLOW_USERS:-$DIR/users}"
    AUTH=0
    [[ -e "$USERS" ]] && AUTH=1
    AUTH_WORD=off
    ((AUTH)) && AUTH_WORD=on
    if ((!AUTH && !INSECURE)) && ! is_loopback "$HOST"; then
        usage_error "refusing to serve $HOST:$PORT without basic auth: write the users file $USERS" \
            "(name:password a line, see docs/cluster_store.md) or pass --insecure"
    fi
    [[ -x "$VENV/bin/mlflow" ]] || usage_error "no mlflow in $VENV (make venv, or set IFRVIS_VENV)"

    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    LOG_DIR="$DIR/logs"
    PG_DATA="$DIR/pg"
    PG_SOCKET="$DIR/pg-socket"
    PG_PASSFILE="$DIR/pg-mlflow.pass"
    PG_OS_USER="${IFRVIS_PG_OS_USER:-postgres}"
    ARTIFACTS="$DIR/artifacts"
    AUTH_INI="$DIR/basic_auth.ini"
    SECRET_FILE="$DIR/flask-secret.key"
    PID_FILE="$DIR/mlflow.pid"
    STATE_FILE="$DIR/mlflow.state"
    USERS_SUMMARY=""
    # Root runs PostgreSQL as another user, who needs to pass through the folder to its own files.
    ((EUID == 0)) && chmod go+x "$DIR"
    install -d -m 711 "$LOG_DIR"
    install -d -m 700 "$ARTIFACTS"
    if ((AUTH)); then
        "$VENV/bin/python" "$HERE/mlflow_users.py" check "$USERS" >/dev/null || exit 2
    fi

    # Concurrent calls wait for the first one instead of starting the servers twice (they are started
    # with this descriptor closed, so the lock ends with this script).
    exec 9>"$DIR/.server.lock"
    flock -w 240 9 || fail "another start or stop holds $DIR/.server.lock"

    install_pg
    # A busy server may answer slowly: it gets 20 s before it counts as hung and is restarted.
    if mlflow_running && wait_for 20 "the running server's /health" health "$(state HOST)" "$(state PORT)"; then
        if [[ "$(state HOST) $(state PORT) $(state AUTH)" != "$HOST $PORT $AUTH_WORD" ]]; then
            fail "the server of $DIR already runs on $(state HOST):$(state PORT) (basic auth: $(state AUTH)):$(
                ) stop it first (server/stop_mlflow_server.sh)"
        fi
        # /health does not touch the database: with PostgreSQL down it answers 200 while every REST
        # call fails (503, or 401 from basic auth), so the database is checked on its own.
        if ! pg_answers; then
            log "PostgreSQL of $DIR does not answer under the running server: restarting it"
            init_pg
            start_pg
        fi
        check_databases
        ((AUTH)) && write_auth_config && sync_users
        print_status
        return 0
    fi
    if [[ -f "$PID_FILE" ]]; then
        mlflow_running && log "mlflow server (pid $(mlflow_pid)) does not answer: restarting it"
        # Its workers too, which serve on after a kill -9 of the pid alone and would hold the port.
        stop_server_group "$(mlflow_pid)"
    fi
    rm -f "$PID_FILE" "$STATE_FILE"
    init_pg
    start_pg
    prepare_databases
    check_databases
    if ((AUTH)); then
        write_auth_config
        sync_users
    fi
    start_mlflow
    print_status
}

main "$@"
