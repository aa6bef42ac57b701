# The mlflow server's processes, shared by server/start_mlflow_server.sh and stop_mlflow_server.sh;
# sourced after the script defines `log MESSAGE` and DIR (the data folder).
#
# The start runs `mlflow server` in a session of its own: its uvicorn and workers share its process
# group, whose id is the pid in mlflow.pid. A `kill -9` of that pid alone leaves the workers serving
# on the port, so everything here works on the group, never on the pid alone.

# local_address HOST: the address a client on this machine connects to.
local_address() {
    case "$1" in
        0.0.0.0 | "" | "*") echo 127.0.0.1 ;;
        :: | "[::]") echo "[::1]" ;;
        *:*) echo "[$1]" ;;
        *) echo "$1" ;;
    esac
}

port_taken() { (exec 3<>"/dev/tcp/${1//[\[\]]/}/$2") 2>/dev/null; }
port_closed() { ! port_taken "$@"; }

# server_group PGID: the processes of group PGID that this data folder's start made (their environment
# names its database password file; a zombie's is empty), one pid a line; not those of another program
# that reuses the number.
server_group() {
    local pid
    for pid in $(pgrep -g "$1"); do
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "PGPASSFILE=$DIR/pg-mlflow.pass"; then
            echo "$pid"
        fi
    done
}

# stop_server_group PGID: SIGTERM to the group, up to 30 s, then SIGKILL; its leader may be gone.
stop_server_group() {
    local pgid="$1" waited=0
    [[ -n "$(server_group "$pgid")" ]] || return 0
    log "stopping the mlflow server (process group $pgid: $(server_group "$pgid" | wc -l) processes)"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    while [[ -n "$(server_group "$pgid")" ]]; do
        if ((waited == 60)); then
            log "the mlflow server did not stop in 30 s: killing it"
            kill -KILL -- "-$pgid" 2>/dev/null || true
        elif ((waited >= 80)); then
            fail "processes $(server_group "$pgid" | tr '\n' ' ')of the mlflow server survive SIGKILL"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}
