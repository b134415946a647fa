"""Defaults and limits the manager, the agent and swarmctl must agree on.

Each value is written here once. A stored service spec is complete (the control API
writes these defaults into it, `manager.domain.specs`), so a value here applies to
services created from now on; swarmctl writes the same ones into the specs it sends.
"""

from __future__ import annotations

from common.api import specs_pb2
from common.modes import JOB_MODES

# -- sessions and node liveness --

# How often an agent heartbeats, until the cluster says otherwise (seconds).
HEARTBEAT_PERIOD = 1.0
# The cluster setting (and `swarm-manager --heartbeat-period`) may range over these:
# below the least, agents' heartbeats alone would keep a manager busy; above the most,
# a dead node goes unnoticed for minutes.
MIN_HEARTBEAT_PERIOD = 0.1
MAX_HEARTBEAT_PERIOD = 60.0
# A session ends after this many periods without a heartbeat: the manager then declares
# the node down, and the agent gives a heartbeat's answer as long before it moves on.
MISSED_HEARTBEATS = 3

# -- service specs (Docker's defaults) --

# How long a task's container gets between SIGTERM and SIGKILL (seconds).
STOP_GRACE_PERIOD = 10.0
# How long a slot waits before its ended task is replaced (seconds).
RESTART_DELAY = 5.0


def restart_condition(mode: str | None) -> specs_pb2.RestartCondition.ValueType:
    """When a task of a service in `mode` is replaced, if its spec does not say: on
    failure for jobs (a job's task that exits 0 is done), always for the rest."""
    if mode in JOB_MODES:
        return specs_pb2.RESTART_CONDITION_ON_FAILURE
    return specs_pb2.RESTART_CONDITION_ANY


# `--update-*` / `--rollback-*`: one task at a time, no delay between them, and each new
# task watched this long before the rollout counts it as a success (seconds).
UPDATE_PARALLELISM = 1
UPDATE_DELAY = 0.0
UPDATE_MONITOR = 5.0

# How long an agent that said goodbye (a clean stop: an upgrade, a restart) may stay
# away before its node is declared down (`swarm-manager --agent-restart-grace`).
AGENT_RESTART_GRACE = 60.0

# How long a task that serves on a network is kept out of the load balancing before its
# container is stopped: the other nodes hear of it within the network view's 50 ms
# debounce and a session message, so this is ample (agent/taskrunner.py, _drain).
NETWORK_DRAIN = 1.0
