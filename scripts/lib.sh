# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it; do not run it.
#
# Sets ROOT (the repository root, absolute) and cds there, so every path the
# scripts use (.venv, .run, images/) is relative to the repository whatever the
# caller's working directory was.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT" || exit 1

# Messages go to stderr: stdout is kept for values that callers capture
# (scripts/dockerd.sh start prints only the engine address there).
_prog="$(basename "$0")"
say()  { printf '%s: %s\n' "$_prog" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$_prog" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$_prog" "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# Become a daemon: a session of its own (setsid: a Ctrl-C on the caller's
# terminal must not reach it), and none of the caller's descriptors but 0-2.
# Without the closing a daemon keeps whatever its caller had open: a lock taken
# with flock stays held for as long as the daemon runs, a pipe never ends. Call
# it in a subshell that sets 0-2, in the background:
#   (exec_daemon CMD ARGS...) >>LOG 2>&1 </dev/null &
# The subshell and setsid exec the command, so $! is the daemon's own pid.
exec_daemon() {
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
        fd=${fd##*/}
        if ((fd > 2)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
    exec setsid "$@"
}

# True if a Docker engine answers at the given address (unix://..., tcp://...).
docker_answers() {
    [[ -n ${1:-} ]] || return 1
    timeout 15 docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# True if PID is a live process whose command line contains every given word.
pid_matches() {
    local pid=$1 word cmdline
    shift
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    for word in "$@"; do
        [[ $cmdline == *"$word"* ]] || return 1
    done
}

# Read a pid file; prints the pid or nothing.
read_pid() {
    if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi
}

alive() { [[ $1 =~ ^[0-9]+$ && -d /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Send SIGTERM to PID, wait up to TIMEOUT seconds, then SIGKILL it and its
# process group (when it leads one). Returns once the process is gone.
stop_pid() {
    local pid=$1 what=$2 timeout=${3:-20} i
    alive "$pid" || return 0
    say "stopping $what (pid $pid)"
    as_root kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        warn "$what (pid $pid) still running after ${timeout}s; killing it"
        if pgrep -g "$pid" >/dev/null 2>&1; then
            as_root kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        as_root kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    # A process that led its own group (started with setsid) may leave
    # children behind (the manager's embedded etcd, dockerd's containerd).
    if pgrep -g "$pid" >/dev/null 2>&1; then
        as_root kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 1
        as_root kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}
