#!/usr/bin/env bash
# Install what swarmlet needs to build, test and run on Debian or Ubuntu, then
# create the virtualenv .venv with the project installed in it (editable, with
# the dev extra). Idempotent: installs only what is missing, and reinstalls the
# Python package only when pyproject.toml changed since the last install.
#
# System packages (through sudo when not root):
#   docker.io        the Docker engine and client (skipped if dockerd is there)
#   etcd-server      the etcd binary the manager embeds (Ubuntu may call it etcd)
#   etcd-client      etcdctl, with which tests read etcd behind the managers
#   busybox-static   the static busybox the demo/test images are made of
#   docker-registry  the local registry of the multi-host test cluster
#   libjemalloc2     the allocator the manager runs on when it is there
#                    (manager/daemon/memalloc.py; ~90 MiB less at 5,000 nodes)
#   nftables         the nft tool: the agent's virtual IPs, routing mesh and network
#                    isolation are one nftables table (agent/network/rules.py)
#   iproute2, iputils-ping, curl, make, and python3-venv when `python3 -m venv` cannot work
#
# Environment: PYTHON=/path/to/python3.X picks the interpreter (>= 3.11).
# Installing docker.io in a container does not start its service (policy-rc.d);
# swarmlet never relies on systemd: scripts/dockerd.sh starts an engine itself.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT/.venv"
STAMP="$VENV/.swarmlet-installed"
MIN_PY=(3 11)

# ---------------------------------------------------------------- apt packages

apt_updated=0
apt_update_once() {
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install the packages named above by hand"
    if (( ! apt_updated )); then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
}

apt_install() {
    [[ $# -gt 0 ]] || return 0
    command -v apt-get >/dev/null 2>&1 || die "missing: $* (no apt-get here: install them by hand)"
    apt_update_once
    say "installing: $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# First of the given package names that apt can install (after apt_update_once).
apt_candidate() {
    local p
    for p in "$@"; do
        if grep -q 'Candidate: [^(]' <<<"$(apt-cache policy "$p" 2>/dev/null)"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

deb_installed() {
    [[ $(dpkg-query -W -f '${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || missing+=(docker.io)
# busybox-static replaces Debian's dynamically linked busybox package.
deb_installed busybox-static || missing+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v make >/dev/null 2>&1 || missing+=(make)
# etcdctl: the tests read etcd behind the managers' backs (chaos ledger, etcd auth set-up).
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
deb_installed libjemalloc2 || missing+=(libjemalloc2)
need_etcd=0
command -v etcd >/dev/null 2>&1 || need_etcd=1

if (( need_etcd )); then
    apt_update_once
    etcd_pkg="$(apt_candidate etcd-server etcd)" || die "no etcd-server or etcd package available"
    missing+=("$etcd_pkg")
fi
if (( ${#missing[@]} )); then
    apt_install "${missing[@]}"
    if (( need_etcd )) && ! command -v etcd >/dev/null 2>&1; then
        die "installed $etcd_pkg but there is no etcd on PATH"
    fi
fi

# ---------------------------------------------------------------- python

py_ok() {
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= (${MIN_PY[0]}, ${MIN_PY[1]}) else 1)" \
        >/dev/null 2>&1
}

find_python() {
    local c
    for c in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$c" >/dev/null 2>&1 && py_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

if [[ -x $VENV/bin/python ]] && ! py_ok "$VENV/bin/python"; then
    die ".venv has Python $("$VENV/bin/python" -V 2>&1); ${MIN_PY[0]}.${MIN_PY[1]}+ is required: remove .venv and rerun"
fi

if [[ ! -x $VENV/bin/python ]]; then
    if ! py="$(find_python)"; then
        if ! command -v python3 >/dev/null 2>&1; then
            apt_install python3
        fi
        py="$(find_python)" || die "Python ${MIN_PY[0]}.${MIN_PY[1]} or newer is required; found: $(python3 -V 2>&1 || echo none). Install one and rerun (PYTHON=/path/to/python3.X selects it)."
    fi
    say "creating .venv with $py ($("$py" -V 2>&1))"
    if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian and Ubuntu ship venv's ensurepip separately.
        rm -rf "$VENV"
        ver="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_update_once
        venv_pkgs=(python3-venv)
        if p="$(apt_candidate "python$ver-venv")"; then venv_pkgs+=("$p"); fi
        apt_install "${venv_pkgs[@]}"
        "$py" -m venv "$VENV" || { rm -rf "$VENV"; die "could not create .venv with $py"; }
    fi
    rm -f "$STAMP"
fi

want="$(cat pyproject.toml "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)"
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    say ".venv is up to date"
else
    say "pip install -e '.[dev]' into .venv"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    echo "$want" >"$STAMP"
    say ".venv is ready"
fi
