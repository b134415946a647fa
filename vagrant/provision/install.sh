#!/usr/bin/env bash
# Vagrant provisioning, every VM, first: copy the repository from the synced
# folder /vagrant to /opt/swarmlet and install it there (scripts/install-deps.sh:
# Debian packages, among them docker.io, and /opt/swarmlet/.venv). Runs as root
# on `vagrant up` of a new VM and on `vagrant provision`, which thereby brings
# the VMs' copy up to date with the host's working tree.
#
# A copy, not /vagrant itself: the virtualenv must belong to the guest (the
# host's .venv, in the same synced folder, has the host's Python in it), and a
# shared folder is slow and may not keep file modes.
set -euo pipefail

SRC=/vagrant
DEST=/opt/swarmlet

[[ -f $SRC/scripts/node-up.sh ]] || { echo "install.sh: no swarmlet repository at $SRC (synced folder missing?)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
if ! command -v rsync >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rsync </dev/null
fi

echo "install.sh: copying $SRC to $DEST"
mkdir -p "$DEST"
rsync -a --delete \
    --exclude /.git --exclude /.venv --exclude /.run --exclude /vagrant/.vagrant \
    --exclude __pycache__ --exclude '*.egg-info' --exclude .mypy_cache \
    --exclude .ruff_cache --exclude .pytest_cache --exclude .hypothesis \
    "$SRC/" "$DEST/"

"$DEST/scripts/install-deps.sh"

# swarmctl and the daemons on root's PATH (sudo keeps /usr/local/bin).
for b in swarmctl swarm-manager swarm-agent; do
    ln -sfn "$DEST/.venv/bin/$b" "/usr/local/bin/$b"
done
echo "install.sh: swarmlet installed in $DEST"
