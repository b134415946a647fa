#!/usr/bin/env bash
# A local multi-host swarmlet cluster on this one machine (as root).
#
#   scripts/cluster.sh up [N]          build it with N hosts (default 3): make cluster NODES=N
#   scripts/cluster.sh down            remove all of it: make cluster-down
#   scripts/cluster.sh status          what runs
#   scripts/cluster.sh kill-host N     kill host N abruptly (SIGKILL to its agent, dockerd,
#                                      containerd and containers), as if it lost power
#   scripts/cluster.sh restore-host N  start host N's dockerd and agent again, wait until Ready
#   scripts/cluster.sh cut-link N      take host N's link to the bridge down
#   scripts/cluster.sh heal-link N     bring it up again
#   scripts/cluster.sh kill-agent N    SIGKILL host N's agent only (restore-host N restarts it)
#   scripts/cluster.sh kill-manager N  SIGKILL manager N (1..SWARMLET_CLUSTER_MANAGERS)
#   scripts/cluster.sh stop-manager N  SIGTERM manager N and wait until it has exited
#   scripts/cluster.sh restore-manager N
#                                      start manager N again with the options of `up`
#   scripts/cluster.sh env             print .run/cluster/env (SWARMCTL_HOST, PATH, and
#                                      SWARMLET_CLUSTER_*: manager, registry, hosts'
#                                      addresses and Docker sockets)
#
# What `up` builds (every address from the /24 the cluster owns, $NET.0/24):
#   - a bridge swl0 with $NET.1, refused if the range is in use elsewhere;
#   - hosts h1..hN: host i is the network namespace swl-hi, joined to the
#     bridge by a veth pair (swl-hi on the bridge, eth0 inside) with address
#     $NET.(10+i) and a default route via the bridge. Each host runs its own
#     dockerd (own data and exec roots, docker0 subnet 10.124.i.0/24, its own
#     iptables) and its own swarm-agent, both inside the namespace, both
#     started by scripts/node-up.sh worker (state in .run/cluster/hi/);
#   - a registry (Debian's docker-registry) on $NET.1:5000 holding
#     swarmlet/demo:latest and swarmlet/sleeper:latest, built on the machine's
#     engine ($DOCKER_HOST, /var/run/docker.sock or one scripts/dockerd.sh
#     starts) and pushed from there; the hosts' dockerds pull from it;
#   - a manager with an embedded etcd on the machine, listening for agents on
#     $NET.1:4242 (joining nodes: 4243), state in .run/cluster/manager, started
#     by scripts/node-up.sh manager; control socket
#     .run/cluster/manager/control.sock.
#   - with SWARMLET_CLUSTER_ETCD (endpoints of an etcd cluster that runs
#     already), no embedded etcd: the manager uses that one, and
#     SWARMLET_CLUSTER_MANAGERS=M (default 1) starts M managers on it, manager i
#     listening on $NET.1:(4240 + 2i) with its state in .run/cluster/manager
#     (i = 1) or .run/cluster/manager<i>; managers 2..M join with the manager
#     join token, and every agent is given all M addresses.
#     SWARMLET_CLUSTER_MANAGER_ARGS adds flags to every manager's command line
#     (e.g. "--heartbeat-period 2s"). What `up` was given is kept in
#     .run/cluster/config for the commands that restart daemons.
# It waits until `swarmctl node ls` shows the N hosts Ready and writes
# .run/cluster/env. A second `up` reuses what runs, adds the hosts that are
# missing, and repairs what is not running. `down` copes with a half-built or
# half-removed cluster and with leftovers of earlier runs.
#
# Environment: SWARMLET_CLUSTER_NET (default 10.123.45: the cluster is
# 10.123.45.0/24), SWARMLET_CLUSTER_BIP_NET (default 10.124: host i's docker0 is
# 10.124.i.1/24, visible only inside its namespace), SWARMLET_BIN (default
# .venv/bin: where swarm-manager, swarm-agent and swarmctl are), and the
# SWARMLET_CLUSTER_ETCD, _MANAGERS and _MANAGER_ARGS above.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NET=${SWARMLET_CLUSTER_NET:-10.123.45}
BIP_NET=${SWARMLET_CLUSTER_BIP_NET:-10.124}
BRIDGE=swl0
GW=$NET.1
MANAGER_ADDR=$GW:4242
REGISTRY=$GW:5000
IMAGES=(swarmlet/demo:latest swarmlet/sleeper:latest)
ENGINE_NAME=cluster           # private engine scripts/dockerd.sh may start to build the images
RUN="$ROOT/.run/cluster"
MANAGER_DIR="$RUN/manager"
TOKEN_FILE="$RUN/worker-token"
ENV_FILE="$RUN/env"
LOCK="$ROOT/.run/cluster.lock"
BIN="${SWARMLET_BIN:-$ROOT/.venv/bin}"
CONTROL="unix://$MANAGER_DIR/control.sock"
CONFIG="$RUN/config"
# What `up` was given; the other commands read it back from $CONFIG.
ETCD=${SWARMLET_CLUSTER_ETCD:-}
MANAGERS=${SWARMLET_CLUSTER_MANAGERS:-1}
MANAGER_ARGS=${SWARMLET_CLUSTER_MANAGER_ARGS:-}
if [[ ${1:-} != up && -s $CONFIG ]]; then
    # shellcheck source=/dev/null
    source "$CONFIG"
fi
# The bridge's alias names the checkout whose cluster it is.
ALIAS="swarmlet-cluster $ROOT"
FW_COMMENT=swarmlet-cluster
READY_TIMEOUT=${SWARMLET_CLUSTER_READY_TIMEOUT:-120}

[[ $NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "SWARMLET_CLUSTER_NET must be three octets, e.g. 10.123.45"
[[ $BIP_NET =~ ^[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "SWARMLET_CLUSTER_BIP_NET must be two octets, e.g. 10.124"

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }

host_ns() { echo "swl-h$1"; }
host_link() { echo "swl-h$1"; }
host_ip() { echo "$NET.$((10 + $1))"; }
host_dir() { echo "$RUN/h$1"; }

# Manager I (1..MANAGERS): its state dir and dispatcher address.
manager_dir() { if (( $1 == 1 )); then echo "$MANAGER_DIR"; else echo "$RUN/manager$1"; fi; }
manager_addr() { echo "$GW:$((4240 + 2 * $1))"; }
manager_addrs() {
    local i out=()
    for ((i = 1; i <= MANAGERS; i++)); do out+=("$(manager_addr "$i")"); done
    local IFS=,
    echo "${out[*]}"
}

# swarmctl on the first manager that answers.
ctl() {
    local i sock
    for ((i = 1; i <= MANAGERS; i++)); do
        sock="$(manager_dir "$i")/control.sock"
        if [[ -S $sock ]] && "$BIN/swarmctl" -H "unix://$sock" "$@"; then return 0; fi
    done
    return 1
}

check_manager_number() {
    if ! [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || (( $1 > MANAGERS )); then
        die "manager number must be 1..$MANAGERS, got '${1:-}'"
    fi
}

check_manager_config() {
    [[ $MANAGERS =~ ^[1-9]$ ]] || die "SWARMLET_CLUSTER_MANAGERS must be 1..9, got '$MANAGERS'"
    (( MANAGERS == 1 )) || [[ -n $ETCD ]] ||
        die "several managers need an etcd of their own: set SWARMLET_CLUSTER_ETCD to its endpoints"
}

check_host_number() {
    if ! [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || (( $1 > 200 )); then
        die "host number must be 1..200, got '${1:-}'"
    fi
}

# One cluster.sh at a time (but kill-host, cut-link and heal-link: they must
# act now). The lock is fd 9: every script this one runs goes through `run`,
# which closes it, or the daemons they start would hold the lock for ever.
lock() {
    mkdir -p "$(dirname "$LOCK")"
    exec 9>"$LOCK"
    flock -w 900 9 || die "another scripts/cluster.sh holds $LOCK"
}
run() { "$@" 9>&-; }

preflight() {
    [[ $(id -u) -eq 0 ]] || die "run as root: the cluster creates namespaces, links and daemons"
    local c missing=()
    for c in ip nsenter dockerd docker docker-registry iptables curl flock findmnt ss setsid; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    (( ${#missing[@]} == 0 )) || die "missing: ${missing[*]} (run scripts/install-deps.sh, or make venv)"
    [[ -x $BIN/swarmctl ]] || die "no swarmlet in .venv (run scripts/install-deps.sh, or make venv)"
}

# Numbers of the hosts that exist in some form (state dir, namespace or link).
known_hosts() {
    {
        local d
        for d in "$RUN"/h*/; do
            if [[ -d $d ]]; then basename "$d"; fi
        done
        ip netns list 2>/dev/null | awk '{ print $1 }'
        ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'
    } | sed -nE 's/^(swl-)?h([0-9]+)$/\2/p' | sort -nu
}

bridge_alias() { cat "/sys/class/net/$BRIDGE/ifalias" 2>/dev/null || true; }
bridge_exists() { ip link show "$BRIDGE" >/dev/null 2>&1; }
bridge_ours() { bridge_exists && [[ "$(bridge_alias)" == "$ALIAS" ]]; }

# ------------------------------------------------------------------ network

# Refuse a range, or a bridge name, that something else uses.
check_range() {
    local others
    if bridge_exists && ! bridge_ours; then
        die "a link named $BRIDGE exists and is not this checkout's cluster (its alias: '$(bridge_alias)'); remove it, or take that cluster down from its checkout"
    fi
    others="$(ip -4 -o addr show | awk -v net="$NET." -v br="$BRIDGE" \
        'index($4, net) == 1 && $2 != br { print "  " $2 " has " $4 }')"
    [[ -z $others ]] || die "$NET.0/24 is in use on this machine:
$others
set SWARMLET_CLUSTER_NET to a free range (three octets, e.g. 10.123.46)"
    others="$( { ip -4 route show root "$NET.0/24"; ip -4 route show match "$NET.0/24"; } |
        grep -v -e '^default' -e "dev $BRIDGE\\b" | sed 's/^/  /' || true)"
    [[ -z $others ]] || die "routes on this machine lead into $NET.0/24:
$others
set SWARMLET_CLUSTER_NET to a free range (three octets, e.g. 10.123.46)"
}

bridge_up() {
    if ! bridge_exists; then
        say "creating bridge $BRIDGE ($GW/24)"
        ip link add name "$BRIDGE" type bridge
        ip link set dev "$BRIDGE" alias "$ALIAS"
    fi
    ip addr replace "$GW/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # With br_netfilter loaded (Docker loads it) frames between two ports of a
    # bridge go through the FORWARD chain, whose policy a Docker engine on the
    # machine sets to DROP: let host-to-host traffic through.
    if ! iptables -w -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; then
        iptables -w -I FORWARD 1 -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT
    fi
}

# Network of host N: namespace, veth pair, addresses, routes. LINK_UP=1 also
# brings the host's link up (it may have been cut).
host_net_up() {
    local n=$1 link_up=${2:-1} ns link ip
    ns="$(host_ns "$n")"
    link="$(host_link "$n")"
    ip="$(host_ip "$n")"
    if [[ ! -e /run/netns/$ns ]]; then
        ip netns add "$ns"
    fi
    if ! ip link show "$link" >/dev/null 2>&1; then
        # A leftover eth0 in the namespace has lost its peer: replace it.
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "$link" type veth peer name eth0 netns "$ns"
        link_up=1
    fi
    ip link set "$link" master "$BRIDGE"
    if (( link_up )); then ip link set "$link" up; fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$GW" dev eth0
}

# Pids of every process in namespace NS and of their descendants (the
# containers' processes, which live in namespaces of their own).
netns_pids() {
    local ns=$1
    descend() {
        local p
        for p in "$@"; do
            echo "$p"
            # shellcheck disable=SC2046  # one pid per word
            descend $(cat /proc/"$p"/task/*/children 2>/dev/null)
        done
    }
    # shellcheck disable=SC2046
    descend $(ip netns pids "$ns" 2>/dev/null) | sort -nu
}

# SIGKILL everything in namespace NS (and its descendants) until nothing is left.
kill_netns() {
    local ns=$1 pids i killed=0
    for ((i = 0; i < 20; i++)); do
        pids="$(netns_pids "$ns")"
        [[ -n $pids ]] || break
        killed=$((killed + $(wc -w <<<"$pids")))
        # shellcheck disable=SC2086  # one pid per word
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    [[ -z "$(netns_pids "$ns")" ]] || warn "processes are left in $ns: $(netns_pids "$ns" | tr '\n' ' ')"
    echo "$killed"
}

# ------------------------------------------------------------------ daemons

host_node_up() {
    local n=$1
    run scripts/node-up.sh worker \
        --manager "$(manager_addrs)" --token-file "$TOKEN_FILE" \
        --state-dir "$(host_dir "$n")" --netns "$(host_ns "$n")" --hostname "h$n" \
        --dockerd-arg "--bip=$BIP_NET.$n.1/24" \
        --dockerd-arg "--insecure-registry=$REGISTRY" \
        --dockerd-arg "--cgroup-parent=/swl-h$n" \
        --dockerd-arg "--exec-opt=native.cgroupdriver=cgroupfs"
}

# Bring hosts up in parallel; their messages are prefixed with the host name.
hosts_up() {
    local n failed=() pid
    local -A started=()
    for n in "$@"; do
        (host_node_up "$n" 2>&1 | sed -u "s/^/  h$n: /" >&2) &
        started[$n]=$!
    done
    for n in "$@"; do
        pid=${started[$n]}
        wait "$pid" || failed+=("h$n")
    done
    (( ${#failed[@]} == 0 )) || die "could not bring up: ${failed[*]} (logs: .run/cluster/hN/{dockerd,agent}.log)"
}

# Status of hostname H in `swarmctl node ls` (Ready if any node of that name is).
node_status() {
    awk -v h="$1" 'NR > 1 && $2 == h { s = $3; if (tolower($3) == "ready") { print "Ready"; found = 1; exit } }
        END { if (!found && s != "") print s }' <<<"$2"
}

# Wait until hosts N... are Ready.
wait_ready() {
    local i n table missing
    say "waiting for $(printf 'h%s ' "$@")to be Ready"
    for ((i = 0; ; i++)); do
        table="$(ctl node ls 2>/dev/null || true)"
        missing=()
        for n in "$@"; do
            [[ "$(node_status "h$n" "$table")" == Ready ]] || missing+=("h$n")
        done
        (( ${#missing[@]} == 0 )) && break
        if (( i >= READY_TIMEOUT * 2 )); then
            printf '%s\n' "$table" >&2
            for n in "$@"; do
                warn "last lines of .run/cluster/h$n/agent.log:"
                tail -n 5 "$(host_dir "$n")/agent.log" >&2 2>/dev/null || true
            done
            die "not Ready after ${READY_TIMEOUT}s: ${missing[*]}"
        fi
        sleep 0.5
    done
}

images_up() {
    local engine
    engine="$(run scripts/dockerd.sh start "$ENGINE_NAME" | tail -n 1)"
    [[ -n $engine ]] || die "no Docker engine to build the images on"
    DOCKER_HOST=$engine run scripts/build-images.sh
    DOCKER_HOST=$engine run scripts/registry.sh push "$REGISTRY" "${IMAGES[@]}"
}

write_env() {
    local n
    {
        echo "# Written by scripts/cluster.sh up: source it to drive the local cluster."
        echo "export SWARMCTL_HOST=$CONTROL"
        echo "export PATH=$BIN:\$PATH"
        echo "export SWARMLET_BIN=$BIN"
        echo "export SWARMLET_CLUSTER_MANAGER=$MANAGER_ADDR"
        echo "export SWARMLET_CLUSTER_MANAGERS=\"$(manager_addrs | tr , ' ')\""
        echo "export SWARMLET_CLUSTER_ETCD=$ETCD"
        for ((n = 1; n <= MANAGERS; n++)); do
            echo "export SWARMLET_CLUSTER_M${n}_ADDR=$(manager_addr "$n")"
            echo "export SWARMLET_CLUSTER_M${n}_CONTROL=unix://$(manager_dir "$n")/control.sock"
        done
        echo "export SWARMLET_CLUSTER_REGISTRY=$REGISTRY"
        echo "export SWARMLET_CLUSTER_TOKEN_FILE=$TOKEN_FILE"
        echo "export SWARMLET_CLUSTER_HOSTS=\"$(known_hosts | sed 's/^/h/' | tr '\n' ' ' | sed 's/ $//')\""
        for n in $(known_hosts); do
            echo "export SWARMLET_CLUSTER_H${n}_ADDR=$(host_ip "$n")"
            if [[ -s $(host_dir "$n")/docker-host ]]; then
                echo "export SWARMLET_CLUSTER_H${n}_DOCKER=$(cat "$(host_dir "$n")/docker-host")"
            fi
        done
    } >"$ENV_FILE"
}

# ------------------------------------------------------------------ commands

up() {
    local nodes=${1:-3} n t0=$SECONDS extra
    if ! [[ $nodes =~ ^[1-9][0-9]*$ ]] || (( nodes > 200 )); then
        die "NODES must be 1..200, got '$nodes'"
    fi
    preflight
    lock
    check_range
    mkdir -p "$RUN"
    bridge_up
    run scripts/registry.sh start "$REGISTRY"
    images_up
    check_manager_config
    {
        printf 'ETCD=%q\n' "$ETCD"
        printf 'MANAGERS=%q\n' "$MANAGERS"
        printf 'MANAGER_ARGS=%q\n' "$MANAGER_ARGS"
        printf 'BIN=%q\n' "$BIN"
    } >"$CONFIG"
    for ((n = 1; n <= MANAGERS; n++)); do
        manager_up "$n"
    done
    for ((n = 1; n <= nodes; n++)); do
        host_net_up "$n" 1
    done
    # shellcheck disable=SC2046  # one host number per word
    hosts_up $(seq 1 "$nodes")
    # shellcheck disable=SC2046
    wait_ready $(seq 1 "$nodes")
    write_env
    echo
    ctl node ls
    extra="$(known_hosts | awk -v n="$nodes" '$1 > n { printf "h%s ", $1 }')"
    [[ -z $extra ]] || warn "hosts from an earlier, larger cluster are left as they are: $extra"
    cat <<MSG

The local cluster is up ($((SECONDS - t0))s): $nodes hosts, $MANAGERS manager(s), a registry.
  hosts     $(for ((n = 1; n <= nodes; n++)); do printf 'h%s=%s ' "$n" "$(host_ip "$n")"; done)
            (network namespaces swl-hN on bridge $BRIDGE, each with its dockerd and agent)
  managers  $(manager_addrs) (state .run/cluster/manager*)${ETCD:+, etcd $ETCD}
  registry  $REGISTRY (${IMAGES[*]})

Drive it with swarmctl:

    source .run/cluster/env     # SWARMCTL_HOST=$CONTROL, PATH
    swarmctl node ls
    swarmctl service create --name web --replicas 6 -p 80 $REGISTRY/swarmlet/demo:latest
    swarmctl service ps web     # then: curl http://$NET.1N:PORT/ for a task on host N

A host's engine: docker -H \$SWARMLET_CLUSTER_H1_DOCKER ps
Faults: scripts/cluster.sh kill-host N | restore-host N | cut-link N | heal-link N
Take it down with: make cluster-down
MSG
}

down() {
    local n ns d pid pids link
    [[ $(id -u) -eq 0 ]] || die "run as root"
    lock
    local net_ours=1
    if bridge_exists && ! bridge_ours; then
        warn "bridge $BRIDGE belongs to another cluster (alias '$(bridge_alias)'): leaving the network alone"
        net_ours=0
    fi

    # The managers first: nothing reschedules while the hosts go.
    for d in "$RUN"/manager "$RUN"/manager[0-9]*; do
        if [[ -d $d ]]; then
            run scripts/node-up.sh stop --state-dir "$d" || warn "could not stop the manager in $d cleanly"
        fi
    done
    # A manager or etcd of this cluster whose state dir is gone.
    for pid in $(pgrep -x swarm-manager || true); do
        if pid_matches "$pid" "--state-dir $MANAGER_DIR"; then
            stop_pid "$pid" "swarm-manager" 30
        fi
    done
    for pid in $(pgrep -x etcd || true); do
        if pid_matches "$pid" "--data-dir $MANAGER_DIR/etcd "; then
            stop_pid "$pid" "embedded etcd" 10
        fi
    done

    # Hosts: agents, containers, dockerds (in parallel), then what is left in
    # their namespaces.
    local -a stopping=()
    for n in $(known_hosts); do
        d="$(host_dir "$n")"
        [[ -d $d ]] || continue
        (run scripts/node-up.sh stop --state-dir "$d" --purge 2>&1 | sed -u "s/^/  h$n: /" >&2) &
        stopping+=($!)
    done
    for pid in "${stopping[@]}"; do wait "$pid" || warn "a host did not stop cleanly"; done
    if (( net_ours )); then
        for n in $(known_hosts); do
            ns="$(host_ns "$n")"
            if [[ -e /run/netns/$ns ]]; then
                pids="$(kill_netns "$ns")"
                (( pids == 0 )) || say "killed $pids leftover process(es) in $ns"
                ip netns delete "$ns" || warn "could not delete namespace $ns"
            fi
            link="$(host_link "$n")"
            if ip link show "$link" >/dev/null 2>&1; then
                ip link delete "$link" || warn "could not delete link $link"
            fi
            # The (now empty) cgroups of the host's containers.
            for d in /sys/fs/cgroup/swl-h"$n" /sys/fs/cgroup/*/swl-h"$n"; do
                if [[ -d $d ]]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
            done
        done
        if bridge_exists; then
            say "deleting bridge $BRIDGE"
            ip link delete "$BRIDGE" type bridge || warn "could not delete bridge $BRIDGE"
        fi
        while iptables -w -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; do
            iptables -w -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT || break
        done
    fi

    SWARMLET_REGISTRY_DIR="$RUN/registry" run scripts/registry.sh stop
    # The engine the images were built on, if this script started it.
    run scripts/dockerd.sh stop "$ENGINE_NAME" >/dev/null 2>&1 || warn "could not stop the private engine '$ENGINE_NAME'"

    # What is still mounted under .run/cluster (a host killed and never
    # restored leaves its containers' mounts), then the state.
    if [[ -d $RUN ]]; then
        findmnt -rn -o TARGET | awk -v d="$RUN" 'index($0, d "/") == 1' | sort -r |
            while read -r d; do umount "$d" 2>/dev/null || umount -l "$d" || warn "could not unmount $d"; done
        rm -rf --one-file-system "$RUN"
    fi
    say "the local cluster is down"
}

status() {
    local n ns link pid d state rc=0
    if bridge_exists; then
        say "bridge $BRIDGE: $(ip -4 -o addr show dev "$BRIDGE" | awk '{ print $4 }') (alias '$(bridge_alias)')"
    else
        say "bridge $BRIDGE: absent"
    fi
    local i
    for ((i = 1; i <= MANAGERS; i++)); do
        if pid="$(read_pid "$(manager_dir "$i")/manager.pid")" && [[ -n $pid ]] && alive "$pid"; then
            say "manager $i: running (pid $pid) on $(manager_addr "$i")"
        else
            say "manager $i: not running"
            rc=1
        fi
    done
    SWARMLET_REGISTRY_DIR="$RUN/registry" scripts/registry.sh status || rc=1
    for n in $(known_hosts); do
        ns="$(host_ns "$n")"
        link="$(host_link "$n")"
        d="$(host_dir "$n")"
        state="netns $([[ -e /run/netns/$ns ]] && echo yes || echo no)"
        state+=", link $(ip -o link show "$link" 2>/dev/null | grep -q '[<,]UP[,>]' && echo up || echo down)"
        for what in dockerd agent; do
            pid="$(read_pid "$d/$what.pid")"
            if [[ -n $pid ]] && alive "$pid"; then state+=", $what $pid"; else state+=", no $what"; fi
        done
        say "h$n $(host_ip "$n"): $state"
    done
    ctl node ls 2>/dev/null || true
    return $rc
}

# Start manager I (or reuse it if it runs): the first creates the cluster (on
# its embedded etcd, or on $ETCD), the others join it with the manager token.
manager_up() {
    local i=$1 token=""
    local -a args=() opts=(--state-dir "$(manager_dir "$1")" --listen-addr "$(manager_addr "$1")")
    # shellcheck disable=SC2206  # MANAGER_ARGS is a list of flags
    args=($MANAGER_ARGS)
    if [[ -n $ETCD ]]; then args+=(--etcd "$ETCD"); fi
    if (( i == 1 )); then opts+=(--token-file "$TOKEN_FILE"); fi
    if (( i > 1 )) && [[ ! -s $(manager_dir "$i")/manager_id ]]; then
        token="$(ctl join-token -q manager)" || die "cannot read the manager join token"
    fi
    # The token reaches the manager through its environment, not its command line.
    SWARMLET_JOIN_TOKEN=$token run scripts/node-up.sh manager "${opts[@]}" -- "${args[@]}"
}

manager_pid() {
    local pid
    pid="$(read_pid "$(manager_dir "$1")/manager.pid")"
    [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" swarm-manager "--state-dir $(manager_dir "$1") " &&
        echo "$pid"
}

kill_manager() {
    local i=$1 sig=$2 pid j
    check_manager_number "$i"
    [[ $(id -u) -eq 0 ]] || die "run as root"
    pid="$(manager_pid "$i")" || { say "manager $i is not running"; return 0; }
    kill "-$sig" "$pid"
    for ((j = 0; j < 300; j++)); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && die "manager $i (pid $pid) did not exit after SIG$sig"
    say "manager $i (pid $pid) stopped with SIG$sig"
}

restore_manager() {
    local i=$1
    check_manager_number "$i"
    preflight
    lock
    manager_up "$i"
}

kill_agent() {
    local n=$1 pid
    check_host_number "$n"
    [[ $(id -u) -eq 0 ]] || die "run as root"
    pid="$(read_pid "$(host_dir "$n")/agent.pid")"
    if [[ -n $pid ]] && alive "$pid" && pid_matches "$pid" swarm-agent; then
        kill -KILL "$pid"
        say "host h$n: agent (pid $pid) killed"
    else
        say "host h$n: no agent running"
    fi
}

kill_host() {
    local n=$1 ns killed
    check_host_number "$n"
    [[ $(id -u) -eq 0 ]] || die "run as root"
    ns="$(host_ns "$n")"
    [[ -e /run/netns/$ns ]] || die "no host h$n (no namespace $ns)"
    killed="$(kill_netns "$ns")"
    say "host h$n killed: SIGKILL to $killed process(es) (agent, dockerd, containerd, shims, containers)"
}

restore_host() {
    local n=$1
    check_host_number "$n"
    preflight
    lock
    bridge_ours || die "no cluster here (bridge $BRIDGE missing or not ours): make cluster"
    [[ -s $TOKEN_FILE || -s $(host_dir "$n")/agent/certificates/node.crt ]] ||
        die "no join token in $TOKEN_FILE: make cluster"
    host_net_up "$n" 0
    hosts_up "$n"
    if ip -o link show "$(host_link "$n")" | grep -q '[<,]UP[,>]'; then
        wait_ready "$n"
        say "host h$n is back"
    else
        say "host h$n's daemons are up; its link is cut (heal-link $n), not waiting for it"
    fi
}

set_link() {
    local n=$1 updown=$2 link
    check_host_number "$n"
    [[ $(id -u) -eq 0 ]] || die "run as root"
    link="$(host_link "$n")"
    ip link show "$link" >/dev/null 2>&1 || die "no host h$n (no link $link)"
    ip link set "$link" "$updown"
    say "host h$n: link $link $updown"
}

case ${1:-} in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    kill-host) kill_host "${2:-}" ;;
    restore-host) restore_host "${2:-}" ;;
    cut-link) set_link "${2:-}" down ;;
    heal-link) set_link "${2:-}" up ;;
    kill-agent) kill_agent "${2:-}" ;;
    kill-manager) kill_manager "${2:-}" KILL ;;
    stop-manager) kill_manager "${2:-}" TERM ;;
    restore-manager) restore_manager "${2:-}" ;;
    env) cat "$ENV_FILE" ;;
    *) usage ;;
esac
