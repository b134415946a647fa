#!/usr/bin/env bash
# Build the demo and test images on the engine at $DOCKER_HOST (or docker's
# default): swarmlet/demo:latest, swarmlet/sleeper:latest and
# swarmlet/healthcheck:latest (with a HEALTHCHECK of its own), from images/NAME/.
#
#   scripts/build-images.sh [NAME...]      default: every folder under images/
#
# Each image is FROM scratch with Debian's static busybox copied in. The build
# context (images/NAME/ plus that busybox) is hashed, and the hash is kept in
# the image's label swarmlet.context-hash: an image whose label matches is not
# rebuilt.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUSYBOX=${BUSYBOX:-/bin/busybox}

command -v docker >/dev/null 2>&1 || die "no docker client on PATH (run scripts/install-deps.sh)"
engine=${DOCKER_HOST:-unix:///var/run/docker.sock}
docker_answers "$engine" || die "no Docker engine answers at $engine (export DOCKER_HOST=\$(scripts/dockerd.sh start))"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; a FROM scratch image needs busybox-static"
fi

# Without the buildx plugin, a current docker client refuses to build unless
# told to use the legacy builder (which then prints a deprecation notice).
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

if [[ $# -gt 0 ]]; then
    names=("$@")
else
    names=()
    for d in images/*/; do
        [[ -f $d/Dockerfile ]] && names+=("$(basename "$d")")
    done
fi

ctx=""
cleanup() { if [[ -n $ctx ]]; then rm -rf "$ctx"; ctx=""; fi; }
trap cleanup EXIT

for n in "${names[@]}"; do
    [[ -f images/$n/Dockerfile ]] || die "no images/$n/Dockerfile"
    image="swarmlet/$n:latest"
    cleanup
    ctx="$(mktemp -d)"
    cp -R "images/$n/." "$ctx/"
    cp "$BUSYBOX" "$ctx/busybox"
    # Names, modes and contents of every file of the context.
    hash="$(
        cd "$ctx"
        {
            find . -type f -printf '%p %m\n' | LC_ALL=C sort
            find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        } | sha256sum | cut -c1-16
    )"
    have="$(docker image inspect --format '{{index .Config.Labels "swarmlet.context-hash"}}' "$image" 2>/dev/null || true)"
    if [[ $have == "$hash" ]]; then
        say "$image is up to date ($hash)"
        continue
    fi
    say "building $image ($hash) on $engine"
    if ! out="$(docker build --label "swarmlet.context-hash=$hash" -t "$image" "$ctx" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "building $image failed"
    fi
    say "built $image"
done
