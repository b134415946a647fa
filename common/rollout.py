"""Rollouts (a service's update or rollback): which states they go through, which
settings are in force, and how long new tasks are watched.

The manager's updater and swarmctl's convergence display both read these.
"""

from __future__ import annotations

from common.api import objects_pb2, specs_pb2
from common.defaults import UPDATE_MONITOR
from common.timeutil import duration_seconds

US = objects_pb2.UpdateStatus
# A rollout is moving slots forward.
ROLLING = (US.UPDATE_STATE_UPDATING, US.UPDATE_STATE_ROLLBACK_STARTED)
# A rollout stopped after failures, until the next `service update`.
PAUSED = (US.UPDATE_STATE_PAUSED, US.UPDATE_STATE_ROLLBACK_PAUSED)
# The rollout under way is a rollback (running or paused): its settings are the
# spec's `rollback` config.
ROLLING_BACK = (US.UPDATE_STATE_ROLLBACK_STARTED, US.UPDATE_STATE_ROLLBACK_PAUSED)


def rollout_config(service: objects_pb2.Service) -> specs_pb2.UpdateConfig:
    """The settings of the rollout under way: the rollback's while rolling back."""
    if service.update_status.state in ROLLING_BACK:
        return service.spec.rollback
    return service.spec.update


def monitor_seconds(cfg: specs_pb2.UpdateConfig) -> float:
    """How long a rollout watches each new task before it counts as a success. A stored
    spec always has it (the manager's updater reads it as it is); the default is for a
    config from elsewhere."""
    if cfg.HasField("monitor"):
        return duration_seconds(cfg.monitor)
    return UPDATE_MONITOR
