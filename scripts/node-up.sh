#!/usr/bin/env bash
# Bring one swarmlet node up: a manager, or a worker (a Docker engine and an
# agent). The one node bring-up script of swarmlet's clusters: the local
# multi-host cluster (scripts/cluster.sh) and the Vagrant cluster
# (vagrant/provision/) both start their nodes with it.
#
#   scripts/node-up.sh manager [--state-dir DIR] [--listen-addr HOST:PORT]
#           [--advertise-addr HOST:PORT] [--token-file FILE] [-- MANAGER-ARGS...]
#
#       Starts swarm-manager (embedded etcd unless MANAGER-ARGS say --etcd)
#       with its state in DIR (default /var/lib/swarmlet/manager), waits until
#       its control socket DIR/control.sock answers, and with --token-file
#       writes the worker join token to FILE (mode 0600).
#
#   scripts/node-up.sh worker --manager HOST:PORT (--token TOKEN | --token-file FILE)
#           [--state-dir DIR] [--hostname NAME] [--netns NAME]
#           [--docker-host ADDR | --own-dockerd] [--dockerd-arg ARG]...
#           [--token-wait SECONDS] [-- AGENT-ARGS...]
#
#       Starts a swarm-agent with its identity in DIR/agent (DIR defaults to
#       /var/lib/swarmlet/node). Its Docker engine is, in this order:
#         --docker-host ADDR   that engine (it must answer);
#         --own-dockerd, or --netns given
#                              a dockerd of the node's own, state in DIR/docker,
#                              socket DIR/docker.sock, extra flags from
#                              --dockerd-arg (repeatable);
#         otherwise            $DOCKER_HOST or /var/run/docker.sock if one
#                              answers, else a private engine started by
#                              scripts/dockerd.sh (named "node").
#       With --netns NAME, the node's dockerd and agent run in the network
#       namespace /run/netns/NAME (entered with `nsenter --net`, not `ip netns
#       exec`, which remounts /sys and leaves dockerd without its cgroups).
#       The join token is read only for the first start (no certificate in
#       DIR/agent yet); --token-file waits up to --token-wait seconds (default
#       0) for FILE to appear. The token reaches the agent through its
#       environment, not its command line. The script returns once the agent
#       holds its node certificate.
#
#   scripts/node-up.sh stop [--state-dir DIR] [--purge]
#
#       Stops what `manager` or `worker` started with that DIR: the agent, the
#       task containers (all containers of the node's own dockerd; only
#       swarmlet's on a shared engine), the node's own or private dockerd, the
#       manager and its embedded etcd. --purge then unmounts what is left under
#       the node's directories and deletes them.
#
# Both `manager` and `worker` reuse daemons that already run for DIR (found
# through their pid files), so running them again is harmless. Each daemon runs
# in its own session (setsid), logs to DIR/NAME.log and has DIR/NAME.pid.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${SWARMLET_BIN:-$ROOT/.venv/bin}"
PRIVATE_ENGINE=node     # name of the engine scripts/dockerd.sh may start for a worker

usage() {
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

# ------------------------------------------------------------------ helpers

# Pid of the daemon NAME (manager|agent|dockerd|etcd) started for DIR, if
# alive: the one its pid file names, else one found by its command line (a pid
# file lost or overwritten), whose pid is then written back.
daemon_pid() {
    local dir=$1 name=$2 pid comm marker
    case $name in
        manager) comm=swarm-manager marker="--state-dir $dir " ;;
        agent) comm=swarm-agent marker="--state-dir $dir/agent " ;;
        dockerd) comm=dockerd marker="--data-root $dir/docker " ;;
        etcd) comm=etcd marker="--data-dir $dir/etcd " ;;
        *) die "daemon_pid: unknown daemon $name" ;;
    esac
    pid="$(read_pid "$dir/$name.pid")"
    if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" "$comm" "$marker"; then
        echo "$pid"
        return 0
    fi
    for pid in $(pgrep -x "$comm" || true); do
        if alive "$pid" && pid_matches "$pid" "$marker"; then
            echo "$pid" >"$dir/$name.pid"
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# Start daemon NAME in DIR: `start_daemon DIR NAME NETNS CMD...`, in its own
# session so that a Ctrl-C on the caller does not reach it. Its pid goes to
# LAUNCHED and to DIR/NAME.pid, except for dockerd: it writes its pid file
# itself and refuses to start if that file names a live process.
LAUNCHED=""
start_daemon() {
    local dir=$1 name=$2 netns=$3 pid
    shift 3
    mkdir -p "$dir"
    # Logs are private (0600): they tell about the cluster.
    (umask 077 && : >>"$dir/$name.log")
    chmod 600 "$dir/$name.log"  # made by an older run with the default umask
    printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$dir/$name.log"
    # exec_daemon (lib.sh) and nsenter exec the command: the pid is the daemon's own.
    if [[ -n $netns ]]; then
        [[ -e /run/netns/$netns ]] || die "no network namespace $netns (/run/netns/$netns)"
        (exec_daemon nsenter --net="/run/netns/$netns" "$@") >>"$dir/$name.log" 2>&1 </dev/null &
    else
        (exec_daemon "$@") >>"$dir/$name.log" 2>&1 </dev/null &
    fi
    pid=$!
    LAUNCHED=$pid
    [[ $name == dockerd ]] || echo "$pid" >"$dir/$name.pid"
    say "started $name (pid $pid${netns:+, netns $netns}, log $dir/$name.log)"
}

fail_daemon() {
    local dir=$1 name=$2 msg=$3
    warn "$msg; last lines of $dir/$name.log:"
    tail -n 30 "$dir/$name.log" >&2 || true
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root: the node's daemons need it"
}

require_venv() {
    [[ -x $BIN/swarm-manager && -x $BIN/swarm-agent && -x $BIN/swarmctl ]] ||
        die "no swarmlet in .venv (run scripts/install-deps.sh or make venv)"
}

# Directories of a worker's own dockerd. Unix socket paths are limited to 108
# bytes and containerd's live under the exec root, so a long DIR moves the exec
# root (and if need be the API socket) to a short directory under /run.
short_dir() { printf '/run/swarmlet-node/%s' "$(printf '%s' "$1" | sha256sum | cut -c1-8)"; }
exec_root_of() {
    local dir=$1
    if (( ${#dir} + 5 > 60 )); then echo "$(short_dir "$dir")/exec"; else echo "$dir/exec"; fi
}
socket_of() {
    local dir=$1
    if (( ${#dir} + 12 > 100 )); then echo "$(short_dir "$dir")/docker.sock"; else echo "$dir/docker.sock"; fi
}

# ------------------------------------------------------------------ manager

manager_up() {
    local dir=/var/lib/swarmlet/manager listen=127.0.0.1:4242 advertise="" token_file=""
    local -a extra=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --state-dir) need_value "$@"; dir=$2; shift 2 ;;
            --listen-addr) need_value "$@"; listen=$2; shift 2 ;;
            --advertise-addr) need_value "$@"; advertise=$2; shift 2 ;;
            --token-file) need_value "$@"; token_file=$2; shift 2 ;;
            --) shift; extra=("$@"); break ;;
            -h | --help) usage ;;
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            *) die "manager: unknown option $1 (daemon flags go after --)" ;;
        esac
    done
    require_root
    require_venv
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    local control="unix://$dir/control.sock" pid i
    ctl() { "$BIN/swarmctl" -H "$control" "$@"; }

    if pid="$(daemon_pid "$dir" manager)"; then
        say "swarm-manager already running (pid $pid, state $dir)"
    else
        local -a args=(--state-dir "$dir" --listen-addr "$listen")
        [[ -n $advertise ]] && args+=(--advertise-addr "$advertise")
        start_daemon "$dir" manager "" "$BIN/swarm-manager" "${args[@]}" "${extra[@]}"
    fi
    say "waiting for the manager's control socket $dir/control.sock"
    for ((i = 0; ; i++)); do
        ctl node ls >/dev/null 2>&1 && break
        daemon_pid "$dir" manager >/dev/null || fail_daemon "$dir" manager "swarm-manager exited"
        (( i < 240 )) || fail_daemon "$dir" manager "the manager does not answer at $control after 120s"
        sleep 0.5
    done
    say "swarm-manager answers (agents: $listen, joining nodes: port $(( ${listen##*:} + 1 )))"

    if [[ -n $token_file ]]; then
        local token tmp
        token="$(ctl join-token -q worker)" || die "cannot read the worker join token"
        [[ $token == SWMTKN-* ]] || die "unexpected worker join token: $token"
        mkdir -p "$(dirname "$token_file")"
        tmp="$token_file.tmp.$$"
        (umask 077 && printf '%s\n' "$token" >"$tmp")
        mv -f "$tmp" "$token_file"
        chmod 600 "$token_file" 2>/dev/null || true
        say "worker join token written to $token_file"
    fi
}

# ------------------------------------------------------------------ worker

# Start (or reuse) the node's own dockerd; prints its address.
own_dockerd() {
    local dir=$1 netns=$2
    shift 2
    local exec_root sock pid i launched
    exec_root="$(exec_root_of "$dir")"
    sock="$(socket_of "$dir")"
    if pid="$(daemon_pid "$dir" dockerd)"; then
        for ((i = 0; i < 60; i++)); do
            docker_answers "unix://$sock" && break
            alive "$pid" || fail_daemon "$dir" dockerd "dockerd (pid $pid) exited"
            sleep 1
        done
        docker_answers "unix://$sock" || fail_daemon "$dir" dockerd "dockerd (pid $pid) does not answer at unix://$sock"
        say "dockerd already running (pid $pid${netns:+, netns $netns})"
        echo "unix://$sock"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || die "no dockerd on PATH (run scripts/install-deps.sh)"
    mkdir -p "$dir/docker" "$exec_root" "$(dirname "$sock")"
    # A dockerd killed abruptly leaves its pid file and its containerd's. Both
    # are checked with kill(pid, 0), which a killed but not yet reaped process
    # (a zombie) or a reused pid passes: dockerd would then refuse to start, or
    # wait for the dead containerd's socket until it times out.
    rm -f "$dir/dockerd.pid"
    local cpid
    cpid="$(read_pid "$exec_root/containerd/containerd.pid")"
    if [[ -n $cpid ]] && ! { alive "$cpid" && pid_matches "$cpid" containerd "$exec_root/containerd/"; }; then
        rm -f "$exec_root/containerd/containerd.pid"
    fi
    local -a args=(
        --data-root "$dir/docker" --exec-root "$exec_root"
        -H "unix://$sock" --pidfile "$dir/dockerd.pid"
        "$@"
    )
    start_daemon "$dir" dockerd "$netns" dockerd "${args[@]}"
    launched=$LAUNCHED
    for ((i = 0; i < 120; i++)); do
        docker_answers "unix://$sock" && break
        alive "$launched" || fail_daemon "$dir" dockerd "dockerd exited"
        sleep 0.5
    done
    docker_answers "unix://$sock" || fail_daemon "$dir" dockerd "dockerd does not answer at unix://$sock after 60s"
    # exec_daemon (lib.sh) and nsenter exec dockerd: the launcher's pid is dockerd's.
    [[ -s $dir/dockerd.pid ]] || echo "$launched" >"$dir/dockerd.pid"
    say "dockerd is up at unix://$sock"
    echo "unix://$sock"
}

worker_up() {
    local dir=/var/lib/swarmlet/node manager="" token="" token_file="" token_wait=0
    local netns="" docker_host="" own=0 hostname=""
    local -a dockerd_args=() extra=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --manager) need_value "$@"; manager=$2; shift 2 ;;
            --token) need_value "$@"; token=$2; shift 2 ;;
            --token-file) need_value "$@"; token_file=$2; shift 2 ;;
            --token-wait) need_value "$@"; token_wait=$2; shift 2 ;;
            --state-dir) need_value "$@"; dir=$2; shift 2 ;;
            --netns) need_value "$@"; netns=$2; shift 2 ;;
            --docker-host) need_value "$@"; docker_host=$2; shift 2 ;;
            --own-dockerd) own=1; shift ;;
            --dockerd-arg) need_value "$@"; dockerd_args+=("$2"); shift 2 ;;
            --hostname) need_value "$@"; hostname=$2; shift 2 ;;
            --) shift; extra=("$@"); break ;;
            -h | --help) usage ;;
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            *) die "worker: unknown option $1 (agent flags go after --)" ;;
        esac
    done
    [[ -n $manager ]] || die "worker: --manager HOST:PORT is required"
    [[ $token_wait =~ ^[0-9]+$ ]] || die "--token-wait takes seconds"
    [[ -z $netns || -e /run/netns/$netns ]] || die "no network namespace $netns (/run/netns/$netns)"
    require_root
    require_venv
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    local agent_dir="$dir/agent" engine pid i

    # The Docker engine.
    if [[ -n $docker_host ]]; then
        for ((i = 0; i < 60; i++)); do
            docker_answers "$docker_host" && break
            sleep 1
        done
        docker_answers "$docker_host" || die "no Docker engine answers at $docker_host"
        engine=$docker_host
        say "using the Docker engine at $engine"
    elif (( own )) || [[ -n $netns ]]; then
        engine="$(own_dockerd "$dir" "$netns" "${dockerd_args[@]}")"
    else
        if ! scripts/dockerd.sh status "$PRIVATE_ENGINE" >/dev/null 2>&1; then
            echo "$PRIVATE_ENGINE" >"$dir/private-dockerd"
        fi
        engine="$(scripts/dockerd.sh start "$PRIVATE_ENGINE" | tail -n 1)"
        [[ -n $engine ]] || die "no Docker engine"
    fi
    echo "$engine" >"$dir/docker-host"

    # The agent.
    if pid="$(daemon_pid "$dir" agent)"; then
        say "swarm-agent already running (pid $pid${netns:+, netns $netns})"
        return 0
    fi
    local -a args=(--manager "$manager" --state-dir "$agent_dir" --docker-host "$engine")
    [[ -n $hostname ]] && args+=(--hostname "$hostname")
    if [[ -s $agent_dir/certificates/node.crt ]]; then
        say "the node has joined before: reusing its certificate in $agent_dir"
        token=""
    elif [[ -z $token ]]; then
        [[ -n $token_file ]] || die "worker: first start: --token TOKEN or --token-file FILE is required"
        for ((i = 0; ; i++)); do
            [[ -s $token_file ]] && break
            (( i < token_wait )) || die "no join token in $token_file${token_wait:+ after ${token_wait}s}"
            (( i % 30 == 0 )) && say "waiting for the join token in $token_file"
            sleep 1
        done
        token="$(tr -d '[:space:]' <"$token_file")"
    fi
    [[ -z $token || $token == SWMTKN-* ]] || die "not a join token (SWMTKN-1-...): ${token:0:12}..."
    # The token reaches the agent through its environment (SWARMLET_JOIN_TOKEN):
    # a command line is visible to every user of the machine.
    if [[ -n $token ]]; then export SWARMLET_JOIN_TOKEN=$token; else unset SWARMLET_JOIN_TOKEN; fi
    start_daemon "$dir" agent "$netns" "$BIN/swarm-agent" "${args[@]}" "${extra[@]}"
    unset SWARMLET_JOIN_TOKEN
    pid=$LAUNCHED
    say "waiting for the agent to hold its node certificate"
    for ((i = 0; ; i++)); do
        [[ -s $agent_dir/certificates/node.crt ]] && break
        alive "$pid" || fail_daemon "$dir" agent "swarm-agent exited"
        (( i < 120 )) || fail_daemon "$dir" agent "swarm-agent has no certificate after 60s"
        sleep 0.5
    done
    # A refused certificate (a node removed from the cluster) ends the agent soon.
    sleep 1
    alive "$pid" || fail_daemon "$dir" agent "swarm-agent exited"
    say "swarm-agent is up${hostname:+ as $hostname} (manager $manager)"
}

# ------------------------------------------------------------------ stop

# Containers on ENGINE: all of them (the node's own engine) or swarmlet's.
remove_containers() {
    local engine=$1 all=$2 ids
    docker_answers "$engine" || return 0
    if (( all )); then
        ids="$(docker -H "$engine" ps -aq 2>/dev/null || true)"
    else
        ids="$(docker -H "$engine" ps -aq --filter label=swarmlet.service.id 2>/dev/null || true)"
    fi
    [[ -n $ids ]] || return 0
    say "removing $(wc -w <<<"$ids") container(s) on $engine"
    # shellcheck disable=SC2086  # one id per word
    docker -H "$engine" rm -f $ids >/dev/null 2>&1 || warn "could not remove some containers on $engine"
}

# Unmount everything at or under the given directories, deepest first.
unmount_under() {
    local d m
    for d in "$@"; do
        [[ -n $d && $d == /* ]] || continue
        findmnt -rn -o TARGET 2>/dev/null |
            awk -v d="$d" '$0 == d || index($0, d "/") == 1' |
            sort -r |
            while read -r m; do
                # findmnt escapes blanks as \x20; our paths have none.
                umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
            done
    done
}

stop_node() {
    local purge=0 d
    local -a dirs=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --state-dir) need_value "$@"; dirs+=("$2"); shift 2 ;;
            --purge) purge=1; shift ;;
            -h | --help) usage ;;
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            *) die "stop: unknown option $1" ;;
        esac
    done
    (( ${#dirs[@]} )) || dirs=(/var/lib/swarmlet/node /var/lib/swarmlet/manager)
    require_root
    for d in "${dirs[@]}"; do
        if [[ -d $d ]]; then
            stop_dir "$(cd "$d" && pwd -P)" "$purge"
        else
            say "nothing at $d"
        fi
    done
}

stop_dir() {
    local dir=$1 purge=$2
    local pid engine="" sock
    sock="$(socket_of "$dir")"
    [[ -s $dir/docker-host ]] && engine="$(cat "$dir/docker-host")"

    if pid="$(daemon_pid "$dir" agent)"; then
        stop_pid "$pid" "swarm-agent" 30
    fi
    rm -f "$dir/agent.pid"

    if pid="$(daemon_pid "$dir" dockerd)"; then
        remove_containers "unix://$sock" 1
        # dockerd stops its containerd on SIGTERM.
        stop_pid "$pid" "dockerd" 60
    elif [[ -n $engine ]]; then
        remove_containers "$engine" 0
    fi
    rm -f "$dir/dockerd.pid"
    if [[ -s $dir/private-dockerd ]]; then
        scripts/dockerd.sh stop "$(cat "$dir/private-dockerd")" || warn "could not stop the private dockerd"
        rm -f "$dir/private-dockerd"
    fi

    if pid="$(daemon_pid "$dir" manager)"; then
        stop_pid "$pid" "swarm-manager" 30
    fi
    rm -f "$dir/manager.pid"
    # The embedded etcd dies with the manager; one left over (a manager killed
    # before it could set that up) must not keep the data dir locked.
    if pid="$(daemon_pid "$dir" etcd)"; then
        stop_pid "$pid" "embedded etcd" 15
    fi

    if (( purge )); then
        local short
        short="$(short_dir "$dir")"
        unmount_under "$dir" "$short"
        rm -rf --one-file-system "$dir" "$short"
        rmdir /run/swarmlet-node 2>/dev/null || true
        say "removed $dir"
    fi
}

case ${1:-} in
    manager) shift; manager_up "$@" ;;
    worker) shift; worker_up "$@" ;;
    stop) shift; stop_node "$@" ;;
    *) usage ;;
esac
