#!/usr/bin/env bash
# Start, stop or show a Docker engine for swarmlet's tests and demo.
#
#   scripts/dockerd.sh start  [NAME]   print the address of an engine to use
#   scripts/dockerd.sh stop   [NAME]   stop the private engine NAME, if running
#   scripts/dockerd.sh status [NAME]   say which engine `start` would use
#
# `start` reuses an engine that already answers at $DOCKER_HOST or at
# /var/run/docker.sock. Otherwise it starts a private dockerd (NAME defaults to
# "default") with all its state under .run/docker/NAME/, waits until it answers,
# and prints its unix:// address as the last line of stdout, so that
#
#   export DOCKER_HOST="$(scripts/dockerd.sh start)"
#
# works. Messages go to stderr. A second `start` finds the running private
# engine through its pid file. `stop` stops only that private engine (and
# deletes its bridge); it removes no files.
#
# The private engine gets a bridge of its own (not docker0), so it does not
# share container addresses with any other engine on the host. When another
# dockerd runs in the same network namespace it is started with
# --iptables=false, because a starting dockerd flushes the shared DOCKER
# iptables chains and would break the other engine's published ports; ports are
# then still published on the host by docker-proxy. Extra dockerd flags can be
# given in SWARMLET_DOCKERD_ARGS.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 start|stop|status [NAME]" >&2; exit 2; }

cmd=${1:-}
name=${2:-default}
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad engine name: $name"
command -v docker >/dev/null 2>&1 || die "no docker client on PATH (run scripts/install-deps.sh)"

run_dir="$ROOT/.run/docker/$name"
data_root="$run_dir/data"
pidfile="$run_dir/docker.pid"
logfile="$run_dir/dockerd.log"
# Unix socket paths are limited to 108 bytes. containerd's sockets live under
# the exec root (exec/containerd/containerd.sock.ttrpc), so a long checkout path
# moves the exec root (and if need be the API socket) to a short directory
# named after the engine and this checkout.
tag="$(printf '%s:%s' "$ROOT" "$name" | sha256sum | cut -c1-8)"
short_dir="/run/swarmlet-docker/$name-$tag"
exec_root="$run_dir/exec"
if (( ${#exec_root} > 60 )); then exec_root="$short_dir/exec"; fi
sock="$run_dir/docker.sock"
if (( ${#sock} > 100 )); then sock="$short_dir/docker.sock"; fi
addr="unix://$sock"
bridge="swl-$tag"

# The address `start` would reuse without starting anything, if any.
existing_engine() {
    if [[ -n ${DOCKER_HOST:-} ]] && docker_answers "$DOCKER_HOST"; then
        echo "$DOCKER_HOST"
    elif docker_answers unix:///var/run/docker.sock; then
        echo unix:///var/run/docker.sock
    else
        return 1
    fi
}

private_pid() {
    local pid
    pid="$(read_pid "$pidfile")"
    if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" dockerd "$pidfile"; then
        echo "$pid"
    else
        return 1
    fi
}

wait_answering() {
    local pid=$1 i
    for ((i = 0; i < 60; i++)); do
        docker_answers "$addr" && return 0
        alive "$pid" || break
        sleep 1
    done
    return 1
}

fail_start() {
    warn "$1; last lines of $logfile:"
    tail -n 30 "$logfile" >&2 || true
    exit 1
}

# Another dockerd (not ours) in this network namespace?
other_dockerd_here() {
    local pid my_ns ns
    my_ns="$(readlink /proc/self/ns/net)"
    for pid in $(pgrep -x dockerd || true); do
        pid_matches "$pid" "$pidfile" && continue
        ns="$(as_root readlink "/proc/$pid/ns/net" 2>/dev/null || true)"
        [[ $ns == "$my_ns" ]] && return 0
    done
    return 1
}

ensure_bridge() {
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        as_root ip link add name "$bridge" type bridge
    fi
    as_root ip link set "$bridge" up
}

start() {
    local found pid
    if found="$(existing_engine)"; then
        say "using the Docker engine at $found"
        echo "$found"
        return 0
    fi
    if pid="$(private_pid)"; then
        wait_answering "$pid" || fail_start "private dockerd '$name' (pid $pid) does not answer at $addr"
        say "private dockerd '$name' already running (pid $pid)"
        echo "$addr"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || die "no dockerd on PATH (run scripts/install-deps.sh)"
    [[ $(id -u) -eq 0 ]] || sudo -v || die "starting a private dockerd needs root"

    mkdir -p "$run_dir" "$data_root"
    as_root mkdir -p "$exec_root" "$(dirname "$sock")"
    ensure_bridge
    local -a args=(
        --data-root "$data_root" --exec-root "$exec_root"
        -H "$addr" --pidfile "$pidfile" --bridge "$bridge"
    )
    if other_dockerd_here; then
        say "another dockerd runs on this host: starting ours with --iptables=false"
        args+=(--iptables=false --ip6tables=false)
    fi
    if [[ $(id -u) -ne 0 ]]; then
        args+=(--group "$(id -gn)")
    fi
    if [[ -n ${SWARMLET_DOCKERD_ARGS:-} ]]; then
        # shellcheck disable=SC2206  # word splitting wanted
        args+=($SWARMLET_DOCKERD_ARGS)
    fi
    rm -f "$pidfile"
    say "starting private dockerd '$name' at $addr (log: ${logfile#"$ROOT"/})"
    printf '\n=== %s: dockerd %s\n' "$(date -Is)" "${args[*]}" >>"$logfile"
    if [[ $(id -u) -eq 0 ]]; then
        (exec_daemon dockerd "${args[@]}") >>"$logfile" 2>&1 </dev/null &
    else
        # The log is opened by this shell, as the caller, on purpose. sudo itself
        # closes every descriptor but 0-2 (see exec_daemon in lib.sh).
        # shellcheck disable=SC2024
        sudo setsid dockerd "${args[@]}" >>"$logfile" 2>&1 </dev/null &
    fi
    local launched=$! i
    # dockerd writes its pid file early; the launcher pid is a fallback.
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidfile ]] && break
        alive "$launched" || break
        sleep 0.1
    done
    pid="$(read_pid "$pidfile")"
    pid=${pid:-$launched}
    if ! wait_answering "$pid"; then
        if alive "$pid"; then
            stop_pid "$pid" "dockerd '$name'" 30
            fail_start "private dockerd '$name' did not answer at $addr within 60s"
        fi
        fail_start "private dockerd '$name' exited"
    fi
    say "private dockerd '$name' is up (pid $pid)"
    echo "$addr"
}

stop() {
    local pid
    if ! pid="$(private_pid)"; then
        say "private dockerd '$name' is not running"
        return 0
    fi
    # dockerd stops its containers (up to 15s) and its containerd on SIGTERM.
    stop_pid "$pid" "private dockerd '$name'" 60
    # The engine's own bridge goes with it: a bridge left behind keeps its
    # subnet, and engines started later would have to pick another one.
    if ip link show "$bridge" >/dev/null 2>&1; then
        as_root ip link delete "$bridge" type bridge || warn "could not delete bridge $bridge"
    fi
    say "private dockerd '$name' stopped"
}

status() {
    local pid found rc=1
    if pid="$(private_pid)"; then
        if docker_answers "$addr"; then
            say "private dockerd '$name': running (pid $pid) at $addr"
        else
            say "private dockerd '$name': process $pid exists but does not answer at $addr"
        fi
    else
        say "private dockerd '$name': not running"
    fi
    if found="$(existing_engine)"; then
        say "start would use the engine at $found"
        echo "$found"
        rc=0
    elif [[ -n ${pid:-} ]] && docker_answers "$addr"; then
        say "start would use the private engine at $addr"
        echo "$addr"
        rc=0
    else
        say "start would start private dockerd '$name'"
    fi
    return $rc
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
