#!/usr/bin/env bash
# The local image registry of the multi-host test cluster: Debian's
# docker-registry (the CNCF distribution registry), plain HTTP, no auth.
#
#   scripts/registry.sh start ADDR    serve on ADDR (HOST:PORT), storage in DIR/data
#   scripts/registry.sh push ADDR IMAGE...
#                                     push IMAGEs from the engine at $DOCKER_HOST
#                                     so that they can be pulled as ADDR/IMAGE
#   scripts/registry.sh stop          stop every registry started with DIR
#   scripts/registry.sh status        say what runs
#
# DIR is $SWARMLET_REGISTRY_DIR, default .run/cluster/registry. `start` reuses a
# registry that runs for DIR and ADDR. Each listener has its own config, pid
# file and log in DIR (registry-HOST-PORT.{yml,pid,log}); they all share the
# storage, so an image pushed through one is served by the others.
#
# Docker talks plain HTTP only to registries it was told are insecure
# (--insecure-registry) and to those on 127.0.0.0/8. `push` first tries ADDR;
# if the engine refuses (a machine's engine started without
# --insecure-registry ADDR), it starts a second listener on 127.0.0.1:PORT and
# pushes through that one instead: the images are the same, whatever address
# the pullers use.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR=${SWARMLET_REGISTRY_DIR:-$ROOT/.run/cluster/registry}

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }

check_addr() {
    [[ $1 =~ ^[0-9.]+:[0-9]+$ ]] || die "bad registry address $1 (want IPv4:PORT)"
}

name_of() { printf 'registry-%s' "${1//:/-}"; }

# Pid of the registry serving ADDR for DIR, if running: the one its pid file
# names, else one found by its command line (whose pid is written back).
registry_pid() {
    local conf pidfile pid
    conf="$DIR/$(name_of "$1").yml"
    pidfile="$DIR/$(name_of "$1").pid"
    pid="$(read_pid "$pidfile")"
    if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" docker-registry "serve $conf "; then
        echo "$pid"
        return 0
    fi
    for pid in $(pgrep -x docker-registry || true); do
        if pid_matches "$pid" "serve $conf "; then
            echo "$pid" >"$pidfile"
            echo "$pid"
            return 0
        fi
    done
    return 1
}

answers() { curl -fsS --max-time 2 -o /dev/null "http://$1/v2/" 2>/dev/null; }

# Is something (not ours) listening on ADDR, or on the wildcard address at its port?
port_taken() {
    local host=${1%:*} port=${1##*:}
    ss -Hltn 2>/dev/null | awk '{ print $4 }' |
        grep -E "^($host|0\.0\.0\.0|\*|\[::\]):$port\$" >/dev/null
}

start() {
    local addr=${1:-}
    [[ -n $addr ]] || usage
    check_addr "$addr"
    command -v docker-registry >/dev/null 2>&1 || die "no docker-registry (apt-get install docker-registry)"
    local name conf log pid i
    name="$(name_of "$addr")"
    conf="$DIR/$name.yml"
    log="$DIR/$name.log"
    if pid="$(registry_pid "$addr")"; then
        say "registry on $addr already running (pid $pid)"
        return 0
    fi
    port_taken "$addr" && die "something else listens on $addr already (ss -ltnp)"
    mkdir -p "$DIR/data"
    cat >"$conf" <<EOF
# Written by scripts/registry.sh: the multi-host test cluster's registry.
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
  # No blob descriptor cache: several listeners may share this storage.
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    printf '\n=== %s: docker-registry serve %s\n' "$(date -Is)" "$conf" >>"$log"
    (exec_daemon docker-registry serve "$conf") >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DIR/$name.pid"
    for ((i = 0; i < 100; i++)); do
        answers "$addr" && break
        if ! alive "$pid"; then
            warn "docker-registry exited; last lines of $log:"
            tail -n 15 "$log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    answers "$addr" || die "the registry does not answer at http://$addr/v2/ (log: $log)"
    say "registry up on $addr (pid $pid, storage $DIR/data)"
}

stop() {
    local f pid
    shopt -s nullglob
    for f in "$DIR"/registry-*.pid; do
        pid="$(read_pid "$f")"
        if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" docker-registry "$DIR/"; then
            stop_pid "$pid" "registry $(basename "$f" .pid)" 10
        fi
        rm -f "$f"
    done
    # A registry whose pid file is gone.
    for pid in $(pgrep -x docker-registry || true); do
        if pid_matches "$pid" docker-registry "$DIR/registry-"; then
            stop_pid "$pid" "registry (pid $pid)" 10
        fi
    done
}

status() {
    local f pid rc=1
    shopt -s nullglob
    for f in "$DIR"/registry-*.pid; do
        pid="$(read_pid "$f")"
        if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" docker-registry "$DIR/"; then
            say "$(basename "$f" .pid): running (pid $pid)"
            rc=0
        fi
    done
    (( rc == 0 )) || say "no registry running for $DIR"
    return $rc
}

# True if the registry at ADDR holds IMAGE as it is on the engine (the
# manifest's config digest is the image id).
up_to_date() {
    local addr=$1 img=$2 id have
    id="$(docker image inspect --format '{{.Id}}' "$img" 2>/dev/null)" || return 1
    have="$(curl -fsS --max-time 5 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$addr/v2/${img%:*}/manifests/${img##*:}" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])' 2>/dev/null)" ||
        return 1
    [[ -n $have && $have == "$id" ]]
}

# Tag SRC as DST on the engine, push it, drop the extra tag.
push_one() {
    local src=$1 dst=$2 out
    docker tag "$src" "$dst" || return 1
    if out="$(docker push "$dst" 2>&1)"; then
        docker rmi "$dst" >/dev/null 2>&1 || true
        return 0
    fi
    docker rmi "$dst" >/dev/null 2>&1 || true
    printf '%s\n' "$out" | tail -n 3 >&2
    return 1
}

push() {
    local addr=${1:-}
    shift || true
    [[ -n $addr && $# -gt 0 ]] || usage
    check_addr "$addr"
    local engine=${DOCKER_HOST:-unix:///var/run/docker.sock} img via="" local_addr
    docker_answers "$engine" || die "no Docker engine answers at $engine"
    answers "$addr" || die "no registry answers at http://$addr/v2/ (scripts/registry.sh start $addr)"
    local_addr="127.0.0.1:${addr##*:}"
    for img in "$@"; do
        docker image inspect "$img" >/dev/null 2>&1 || die "no image $img on $engine"
        [[ $img == *:* ]] || img="$img:latest"
        if up_to_date "$addr" "$img"; then
            say "$addr/$img is up to date"
            continue
        fi
        if [[ -z $via ]]; then
            # The first image finds out which address the engine will push to.
            if push_one "$img" "$addr/$img" 2>/dev/null; then
                via=$addr
            else
                say "the engine at $engine does not push to http://$addr; going through $local_addr"
                start "$local_addr"
                push_one "$img" "$local_addr/$img" || die "pushing $img through $local_addr failed"
                via=$local_addr
            fi
        else
            push_one "$img" "$via/$img" || die "pushing $img through $via failed"
        fi
        say "pushed $img: pull it as $addr/$img"
    done
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    push) shift; push "$@" ;;
    *) usage ;;
esac
