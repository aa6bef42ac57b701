# Shared by the scripts that start and stop this project's daemons (slurm/, server/); sourced after the
# script defines `log MESSAGE`.

# fail MESSAGE [LOG...]: says MESSAGE, prints the last lines of each log given and exits non-zero.
fail() {
    local message="$1"
    shift
    log "ERROR: $message"
    local file
    for file in "$@"; do
        if [[ -f "$file" ]]; then
            echo "----- last lines of $file -----" >&2
            tail -n 25 "$file" >&2
        fi
    done
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s until it succeeds.
wait_for() {
    local timeout="$1" description="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $description"
            return 1
        fi
        sleep 0.5
    done
}
