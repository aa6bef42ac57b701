#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine: munged, MariaDB (127.0.0.1 only), slurmdbd,
# slurmctld and slurmd, as root and without systemd (Debian 12 packages).
# Idempotent: with the cluster already up it only prints its status line.
# Usage: bash slurm/start_cluster.sh        (environment: IFRVIS_SLURM_PARTITION, IFRVIS_SLURM_CLUSTER)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$HERE/templates"
CLUSTER="${IFRVIS_SLURM_CLUSTER:-ifrvis}"
PARTITION="${IFRVIS_SLURM_PARTITION:-debug}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
DBD_PORT=6819
DB_PORT=3306
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_SOCKET=/run/mysqld/mysqld.sock
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client gcc libc6-dev iproute2)
LOOPBACK_BIND="$RUN_DIR/loopback_bind.so"
STARTED_AT=$SECONDS

log() { echo "[start_cluster] $*" >&2; }
# shellcheck source=../scripts/daemon_helpers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/daemon_helpers.sh"



node_state() { sinfo -h -N -p "$PARTITION" -o '%t' 2>/dev/null | head -n 1; }
node_is_usable() { [[ "$(node_state)" =~ ^(idle|mix|alloc|comp)$ ]]; }
sacct_answers() { sacct -n -X -S now-1minutes -o JobID >/dev/null 2>&1; }
is_running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# True when something listens on port $DBD_PORT and only on loopback (a slurmdbd started before the
# preload existed listens on 0.0.0.0, and is restarted).
dbd_on_loopback_only() {
    local addresses
    addresses="$(ss -ltnH "sport = :$DBD_PORT" | awk '{print $4}')"
    [[ -n "$addresses" ]] && ! grep -qv -e '^127\.0\.0\.1:' -e '^\[::1\]:' <<<"$addresses"
}

print_status() {
    local node cpus memory
    read -r node cpus memory < <(sinfo -h -N -p "$PARTITION" -o '%N %c %m' | head -n 1)
    echo "Slurm cluster '$CLUSTER' up: node $node ($cpus CPUs, ${memory} MB) $(node_state)" \
        "in partition '$PARTITION', accounting via slurmdbd (sacct OK) [$((SECONDS - STARTED_AT))s]"
}

cluster_is_up() {
    command -v sinfo >/dev/null 2>&1 && is_running "$RUN_DIR/slurmctld.pid" \
        && is_running "$RUN_DIR/slurmd.pid" && is_running "$RUN_DIR/slurmdbd.pid" \
        && dbd_on_loopback_only && node_is_usable && sacct_answers
}

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$package")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting services (no init system here).
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local status=0
    {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" 9>&-
    } >"$LOG_DIR/apt.log" 2>&1 || status=$?
    ((added_policy)) && rm -f /usr/sbin/policy-rc.d
    ((status == 0)) || fail "apt-get install ${missing[*]} failed (exit $status)" "$LOG_DIR/apt.log"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge /var/log/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged --log-file=/var/log/munge/munged.log 9>&-
        wait_for 15 "munged" bash -c 'munge -n | unmunge' \
            || fail "munged does not answer" /var/log/munge/munged.log
    fi
}

db_ping() { mariadb-admin --socket="$DB_SOCKET" --connect-timeout=2 ping; }

start_mariadb() {
    install -d -o mysql -g mysql -m 755 /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising the MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG_DIR/mariadb-install.log" 2>&1 \
            || fail "mariadb-install-db failed" "$LOG_DIR/mariadb-install.log"
    fi
    if ! db_ping >/dev/null 2>&1; then
        log "starting MariaDB on 127.0.0.1:$DB_PORT"
        touch "$LOG_DIR/mariadb.log"
        chown mysql:mysql "$LOG_DIR/mariadb.log"
        setsid nohup /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
            --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DB_SOCKET" \
            --pid-file=/run/mysqld/mysqld.pid --log-error="$LOG_DIR/mariadb.log" \
            --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1 9>&- &
        wait_for 60 "MariaDB" db_ping || fail "MariaDB does not answer" "$LOG_DIR/mariadb.log"
    fi
}

# Creates the accounting database and its user; the password is new on each full start.
prepare_database() {
    DB_PASS="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    mariadb --socket="$DB_SOCKET" <<SQL || fail "could not prepare the accounting database" "$LOG_DIR/mariadb.log"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

# render TEMPLATE DEST MODE KEY=VALUE...: replaces each @KEY@ of TEMPLATE.
render() {
    local template="$1" dest="$2" mode="$3"
    shift 3
    local text pair
    text="$(cat "$template")"
    for pair in "$@"; do
        text="${text//@${pair%%=*}@/${pair#*=}}"
    done
    if [[ "$text" == *@[A-Z_]*@* ]]; then
        fail "unreplaced placeholder in $template"
    fi
    (umask 077 && printf '%s\n' "$text" >"$dest.tmp")
    chmod "$mode" "$dest.tmp"
    mv "$dest.tmp" "$dest"
}

# render_slurm_conf DEST: slurm.conf for this machine, from its template.
render_slurm_conf() {
    local node_line node host
    # `slurmd -C` prints this machine's NodeName/CPUs/sockets/cores/RealMemory line.
    node_line="$(slurmd -C | grep '^NodeName=')" || fail "slurmd -C failed"
    node="${node_line#NodeName=}"
    node="${node%% *}"
    host="$(hostname -s)"
    render "$TEMPLATES/slurm.conf.in" "$1" 644 \
        CLUSTER="$CLUSTER" HOST="$host" LOG_DIR="$LOG_DIR" DBD_PORT="$DBD_PORT" \
        NODE_LINE="$node_line" NODE="$node" PARTITION="$PARTITION"
}

# True when the running daemons read the slurm.conf that the template gives today (a cluster started
# before a change of the template is restarted with the new one).
config_is_current() {
    command -v slurmd >/dev/null 2>&1 && [[ -f "$CONF_DIR/slurm.conf" ]] || return 1
    render_slurm_conf "$RUN_DIR/slurm.conf.expected"
    cmp -s "$RUN_DIR/slurm.conf.expected" "$CONF_DIR/slurm.conf"
}

write_configs() {
    install -d -m 755 "$CONF_DIR"
    render_slurm_conf "$CONF_DIR/slurm.conf"
    render "$TEMPLATES/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600 \
        LOG_DIR="$LOG_DIR" DBD_PORT="$DBD_PORT" DB_PORT="$DB_PORT" DB_USER="$DB_USER" \
        DB_PASS="$DB_PASS" DB_NAME="$DB_NAME"
}

# stop_daemon NAME: ends the daemon whose pid file is $RUN_DIR/NAME.pid (config changes need restarts).
stop_daemon() {
    local pid_file="$RUN_DIR/$1.pid"
    is_running "$pid_file" || return 0
    kill "$(cat "$pid_file")"
    wait_for 20 "$1 to stop" bash -c "! kill -0 $(cat "$pid_file") 2>/dev/null" \
        || kill -9 "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
}

# Builds the preload that keeps slurmdbd on loopback (loopback_bind.c says why) when it is missing or
# older than its source.
build_loopback_bind() {
    [[ "$LOOPBACK_BIND" -nt "$HERE/loopback_bind.c" ]] && return 0
    gcc -O2 -shared -fPIC -Wall -Werror -o "$LOOPBACK_BIND.tmp" "$HERE/loopback_bind.c" -ldl \
        >"$LOG_DIR/loopback_bind.log" 2>&1 || fail "could not build $LOOPBACK_BIND" "$LOG_DIR/loopback_bind.log"
    mv "$LOOPBACK_BIND.tmp" "$LOOPBACK_BIND"
}

start_slurm() {
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon slurmdbd

    log "starting slurmdbd"
    LD_PRELOAD="$LOOPBACK_BIND" slurmdbd 9>&- || fail "slurmdbd did not start" "$LOG_DIR/slurmdbd.log"
    wait_for 30 "slurmdbd" sacctmgr -n list cluster format=Cluster \
        || fail "slurmdbd does not answer" "$LOG_DIR/slurmdbd.log"
    dbd_on_loopback_only || fail "slurmdbd does not listen on loopback only: $(ss -ltnH "sport = :$DBD_PORT")"
    if ! sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr add cluster failed" "$LOG_DIR/slurmdbd.log"
    fi

    log "starting slurmctld and slurmd"
    slurmctld 9>&- || fail "slurmctld did not start" "$LOG_DIR/slurmctld.log"
    wait_for 30 "slurmctld" scontrol ping || fail "slurmctld does not answer" "$LOG_DIR/slurmctld.log"
    slurmd 9>&- || fail "slurmd did not start" "$LOG_DIR/slurmd.log"
    if ! wait_for 30 "the node to become idle" node_is_usable; then
        # A node left down or drained by an earlier run comes back on resume.
        scontrol update NodeName="$(sinfo -h -N -o '%N' | head -n 1)" State=RESUME >/dev/null 2>&1 || true
        wait_for 15 "the node to become idle" node_is_usable \
            || fail "node state is '$(node_state)'" "$LOG_DIR/slurmd.log" "$LOG_DIR/slurmctld.log"
    fi
    wait_for 30 "sacct" sacct_answers || fail "sacct does not answer" "$LOG_DIR/slurmdbd.log" "$LOG_DIR/slurmctld.log"
}

main() {
    [[ $EUID -eq 0 ]] || { echo "slurm/start_cluster.sh must run as root" >&2; exit 1; }
    install -d -m 755 "$RUN_DIR"
    # Concurrent calls wait for the first one instead of starting the daemons twice (the daemons are
    # started with this descriptor closed, so the lock ends with this script).
    exec 9>"$RUN_DIR/start_cluster.lock"
    flock -w 170 9 || fail "another slurm/start_cluster.sh holds $RUN_DIR/start_cluster.lock"
    if cluster_is_up && config_is_current; then
        print_status
        return 0
    fi
    install -d -m 755 "$LOG_DIR" "$RUN_DIR"
    install -d -m 755 /var/spool/slurmctld /var/spool/slurmd
    install_packages
    start_munge
    start_mariadb
    prepare_database
    write_configs
    build_loopback_bind
    start_slurm
    print_status
}

main "$@"
