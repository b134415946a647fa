#!/usr/bin/env bash
# Vagrant provisioning of the manager VM, on every `vagrant up`: start the
# manager (state in /var/lib/swarmlet/manager, the default `swarmctl` looks
# at) with scripts/node-up.sh, listening for agents on MANAGER_ADDR, and write
# the worker join token to TOKEN_FILE in the synced folder for the workers.
#
#   manager.sh MANAGER_ADDR TOKEN_FILE
set -euo pipefail

addr=${1:?usage: manager.sh MANAGER_ADDR TOKEN_FILE}
token_file=${2:?usage: manager.sh MANAGER_ADDR TOKEN_FILE}

/opt/swarmlet/scripts/node-up.sh manager \
    --state-dir /var/lib/swarmlet/manager \
    --listen-addr "$addr" \
    --token-file "$token_file"

swarmctl node ls
echo "manager.sh: manager up on $addr; on this VM: sudo swarmctl node ls"
