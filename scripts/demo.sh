#!/usr/bin/env bash
# Bring a one-node swarmlet up on this machine and deploy a web service, or
# take it all down again. Called by `make demo` and `make down`.
#
#   scripts/demo.sh up     deps, Docker engine, images, manager (embedded etcd),
#                          agent, then service `web` (3 replicas of
#                          swarmlet/demo:latest, port 80 published) and a page
#                          fetched from one of its tasks
#   scripts/demo.sh down   remove the services, stop agent and manager, remove
#                          leftover task containers, stop the Docker engine if
#                          `up` started it, delete the manager and agent state
#
# Both are idempotent: a second `up` reuses what runs and the existing service;
# `down` copes with whatever part of the demo is left. Everything lives in .run/:
# manager.log, agent.log, manager/ (state dir; the agent's is manager/node), *.pid, env.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN="$ROOT/.run"
BIN="$ROOT/.venv/bin"
MANAGER_ADDR=127.0.0.1:4242
MANAGER_DIR="$RUN/manager"
# The agent runs the manager's own node (one node per host, as in Swarm): the manager
# writes that node's identity to <its state dir>/node for the agent on its host.
AGENT_DIR="$MANAGER_DIR/node"
CONTROL="unix://$MANAGER_DIR/control.sock"
SERVICE=web
IMAGE=swarmlet/demo:latest
# A second service on the same overlay network reaches $SERVICE by name.
NETWORK=demo-net
PROBE=probe
PROBE_IMAGE=swarmlet/sleeper:latest
ENGINE_NAME=default             # name of the private engine (scripts/dockerd.sh)
ENGINE_FILE="$RUN/demo.docker-host"   # the engine the demo's agent uses
STARTED_ENGINE="$RUN/demo.started-dockerd"  # present if `up` started that engine

swarmctl() { "$BIN/swarmctl" -H "$CONTROL" "$@"; }

manager_answers() { swarmctl node ls >/dev/null 2>&1; }

# Pid of our running daemon WHAT (manager|agent), from .run/WHAT.pid.
daemon_pid() {
    local what=$1 pid
    pid="$(read_pid "$RUN/$what.pid")"
    if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" "swarm-$what"; then
        echo "$pid"
    else
        return 1
    fi
}

# Start a daemon in its own session (a Ctrl-C on `make demo` must not stop it).
# Its log is private (0600): it tells about the cluster, and once told its secrets.
start_daemon() {
    local what=$1 pid
    shift
    (umask 077 && : >>"$RUN/$what.log")
    chmod 600 "$RUN/$what.log"  # made by an older demo with the default umask
    printf '\n=== %s: swarm-%s %s\n' "$(date -Is)" "$what" "$*" >>"$RUN/$what.log"
    (exec_daemon "$BIN/swarm-$what" "$@") >>"$RUN/$what.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$RUN/$what.pid"
    say "started swarm-$what (pid $pid, log .run/$what.log)"
}

# Fail with the tail of WHAT's log.
fail_daemon() {
    local what=$1 msg=$2
    warn "$msg; last lines of .run/$what.log:"
    tail -n 30 "$RUN/$what.log" >&2 || true
    exit 1
}

# Ports published by the service's tasks, running ones first, one per line.
published_ports() {
    local ps ids id
    ps="$(swarmctl service ps "$SERVICE" 2>/dev/null || true)"
    {
        # The PORTS column reads like *:32768->80/tcp.
        grep -i running <<<"$ps" | grep -oE ':[0-9]+->80/tcp' | sed -E 's/^:([0-9]+)-.*/\1/' || true
        # Else the tasks' JSON: status.port_status.ports[].published_port.
        ids="$(swarmctl service ps -q "$SERVICE" 2>/dev/null || awk 'NR > 1 { print $1 }' <<<"$ps")"
        for id in $ids; do
            swarmctl task inspect "$id" 2>/dev/null | "$BIN/python" -c '
import json, sys
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("published_port", "publishedPort") and str(x).isdigit() and int(x) > 0:
                print(int(x))
            else:
                walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
try:
    walk(json.load(sys.stdin))
except ValueError:
    pass
' || true
        done
    } | awk '$0 > 0 && !seen[$0]++'
}

up() {
    local pid engine i port page nodes

    say "installing what is missing (scripts/install-deps.sh)"
    "$ROOT/scripts/install-deps.sh"
    mkdir -p "$RUN"

    # Docker engine: an existing one, or a private dockerd that `down` stops.
    if ! scripts/dockerd.sh status "$ENGINE_NAME" >/dev/null 2>&1; then
        engine="$(scripts/dockerd.sh start "$ENGINE_NAME" | tail -n 1)"
        echo "$ENGINE_NAME" >"$STARTED_ENGINE"
    else
        engine="$(scripts/dockerd.sh start "$ENGINE_NAME" | tail -n 1)"
    fi
    [[ -n $engine ]] || die "no Docker engine"
    export DOCKER_HOST="$engine"
    echo "$engine" >"$ENGINE_FILE"

    scripts/build-images.sh

    # Manager, with an embedded etcd.
    if pid="$(daemon_pid manager)"; then
        say "swarm-manager already running (pid $pid)"
    else
        start_daemon manager --state-dir "$MANAGER_DIR" --listen-addr "$MANAGER_ADDR"
    fi
    say "waiting for the manager's control socket"
    for ((i = 0; ; i++)); do
        manager_answers && break
        daemon_pid manager >/dev/null || fail_daemon manager "swarm-manager exited"
        (( i < 120 )) || fail_daemon manager "the manager does not answer at $CONTROL after 60s"
        sleep 0.5
    done

    # Agent, on the demo's engine.
    if pid="$(daemon_pid agent)"; then
        say "swarm-agent already running (pid $pid)"
    else
        # The agent is the manager's node: it starts with the certificate the manager
        # wrote to $AGENT_DIR, so it needs no join token (a worker on another host would
        # take one from its environment or a 0600 file, never its command line).
        start_daemon agent --manager "$MANAGER_ADDR" \
            --state-dir "$AGENT_DIR" --docker-host "$DOCKER_HOST"
    fi
    say "waiting for a Ready node"
    for ((i = 0; ; i++)); do
        nodes="$(swarmctl node ls 2>/dev/null || true)"
        grep -Eqi '(^|[[:space:]])ready([[:space:]]|$)' <<<"$nodes" && break
        daemon_pid agent >/dev/null || fail_daemon agent "swarm-agent exited"
        (( i < 120 )) || fail_daemon agent "no node is Ready after 60s"
        sleep 0.5
    done
    swarmctl node ls

    # The service.
    if swarmctl service inspect "$SERVICE" >/dev/null 2>&1; then
        say "service $SERVICE exists already"
    else
        swarmctl network inspect "$NETWORK" >/dev/null 2>&1 \
            || swarmctl network create "$NETWORK" >/dev/null \
            || die "swarmctl network create $NETWORK failed"
        say "creating service $SERVICE: 3 replicas of $IMAGE on network $NETWORK, port 80 published"
        if ! swarmctl service create --name "$SERVICE" --replicas 3 --network "$NETWORK" \
            -p 80 "$IMAGE"; then
            warn "swarmctl service create failed; last lines of .run/manager.log:"
            tail -n 15 "$RUN/manager.log" >&2 || true
            fail_daemon agent "swarmctl service create failed"
        fi
    fi
    echo
    swarmctl service ps "$SERVICE"
    echo

    # A page from one of its tasks.
    page=""
    for ((i = 0; i < 30; i++)); do
        for port in $(published_ports); do
            if page="$(curl -fsS --max-time 5 "http://127.0.0.1:$port/" 2>/dev/null)"; then
                say "GET http://127.0.0.1:$port/"
                printf '%s\n' "$page"
                break
            fi
            page=""
        done
        [[ -n $page ]] && break
        sleep 1
    done
    [[ -n $page ]] || die "could not fetch a page from any task of $SERVICE (see: swarmctl service ps $SERVICE)"

    # Service discovery: a task of another service asks for "$SERVICE" by name, and its
    # virtual IP hands the connection to one of the replicas.
    if ! swarmctl service inspect "$PROBE" >/dev/null 2>&1; then
        say "creating service $PROBE on network $NETWORK"
        swarmctl service create --name "$PROBE" --network "$NETWORK" "$PROBE_IMAGE" >/dev/null \
            || die "swarmctl service create $PROBE failed"
    fi
    answer=""
    for ((i = 0; i < 30; i++)); do
        probe_id="$(docker ps -q --filter "label=swarmlet.service.name=$PROBE" | head -n 1)"
        if [[ -n $probe_id ]] && answer="$(docker exec "$probe_id" sh -c \
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $SERVICE 80" 2>/dev/null)" \
            && grep -q "served by" <<<"$answer"; then
            break
        fi
        answer=""
        sleep 1
    done
    [[ -n $answer ]] || die "$PROBE could not reach $SERVICE by name (see: swarmctl service ps $PROBE)"
    say "from a task of $PROBE: nc $SERVICE 80 (by name, through its virtual IP)"
    sed -n '/hello/,$p' <<<"$answer"

    {
        echo "export SWARMCTL_HOST=$CONTROL"
        echo "export PATH=$BIN:\$PATH"
        echo "export DOCKER_HOST=$DOCKER_HOST"
    } >"$RUN/env"
    cat <<MSG

swarmlet is up: one node, the manager on $MANAGER_ADDR (state in .run/manager)
with its agent on the Docker engine at $DOCKER_HOST, service $SERVICE with 3 replicas.
To drive it with swarmctl:

    export SWARMCTL_HOST=$CONTROL
    export PATH=$BIN:\$PATH        # or: source .run/env
    swarmctl service ls
    swarmctl service ps $SERVICE

Take it down with: make down
MSG
}

# Containers made by swarmlet's agents on ENGINE.
task_containers() {
    docker -H "$1" ps -aq --filter label=swarmlet.service.id 2>/dev/null || true
}

down() {
    local engine="" pid ids id i

    if [[ -s $ENGINE_FILE ]]; then
        engine="$(cat "$ENGINE_FILE")"
        docker_answers "$engine" || engine=""
    fi

    if daemon_pid manager >/dev/null && manager_answers; then
        ids="$(swarmctl service ls -q 2>/dev/null || swarmctl service ls 2>/dev/null | awk 'NR > 1 { print $1 }' || true)"
        for id in $ids; do
            say "removing service $id"
            swarmctl service rm "$id" >/dev/null 2>&1 || warn "could not remove service $id"
        done
        if [[ -n $ids && -n $engine ]] && daemon_pid agent >/dev/null; then
            say "waiting for the agent to remove the task containers"
            for ((i = 0; i < 30; i++)); do
                [[ -z $(task_containers "$engine") ]] && break
                sleep 1
            done
        fi
        # The network last: the agent then takes its bridge, VXLAN device and rules down.
        for net in $(swarmctl network ls -q 2>/dev/null); do
            swarmctl network rm "$net" >/dev/null 2>&1 || true
        done
        sleep 1
    fi

    for what in agent manager; do
        if pid="$(daemon_pid "$what")"; then
            stop_pid "$pid" "swarm-$what" 30
        fi
        rm -f "$RUN/$what.pid"
    done

    if [[ -n $engine ]]; then
        ids="$(task_containers "$engine")"
        if [[ -n $ids ]]; then
            say "removing leftover task containers on $engine"
            # shellcheck disable=SC2086  # one id per word
            docker -H "$engine" rm -f $ids >/dev/null || warn "could not remove some containers"
        fi
    fi

    # Whatever the agent's data plane left (an agent stopped first leaves it, as it
    # leaves its containers): the engine's overlay networks, bridges, VXLAN devices, rules.
    if [[ -n $engine ]]; then
        for net in $(docker -H "$engine" network ls -q --filter label=swarmlet.network.id); do
            docker -H "$engine" network rm "$net" >/dev/null 2>&1 || true
        done
    fi
    if [[ -x $BIN/python ]]; then
        "$BIN/python" -m agent.network.cleanup || warn "could not remove the overlay devices and rules"
    fi

    if [[ -s $STARTED_ENGINE ]]; then
        scripts/dockerd.sh stop "$(cat "$STARTED_ENGINE")"
    fi
    rm -f "$STARTED_ENGINE" "$ENGINE_FILE" "$RUN/env"
    rm -rf "$MANAGER_DIR" "$AGENT_DIR" "$RUN/agent"  # $RUN/agent: the layout before one node per host
    say "down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
