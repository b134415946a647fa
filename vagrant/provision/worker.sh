#!/usr/bin/env bash
# Vagrant provisioning of a worker VM, on every `vagrant up`: build the demo
# images on the VM's Docker engine, then start the node with scripts/node-up.sh
# (the engine at /var/run/docker.sock, which Debian's docker.io runs under
# systemd, else a private one; an agent with its state in /var/lib/swarmlet/node)
# joining the manager at MANAGER_ADDR with the token the manager wrote to
# TOKEN_FILE (waited for up to 10 minutes; only needed on the first start).
#
#   worker.sh MANAGER_ADDR TOKEN_FILE
set -euo pipefail

addr=${1:?usage: worker.sh MANAGER_ADDR TOKEN_FILE}
token_file=${2:?usage: worker.sh MANAGER_ADDR TOKEN_FILE}

cd /opt/swarmlet
unset DOCKER_HOST
engine="$(scripts/dockerd.sh start node | tail -n 1)"
DOCKER_HOST=$engine scripts/build-images.sh

scripts/node-up.sh worker \
    --manager "$addr" \
    --token-file "$token_file" --token-wait 600 \
    --state-dir /var/lib/swarmlet/node \
    --hostname "$(hostname -s)"
echo "worker.sh: $(hostname -s) joined the manager at $addr"
