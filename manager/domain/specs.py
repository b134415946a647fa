"""Service spec defaults: what a spec that leaves a setting out gets.

A stored spec is always complete: the control API writes these defaults into it
(`with_defaults`) before it is stored, so the reconcilers never assume one. The values
are in `common.defaults`, shared with swarmctl (which writes the same ones) and the
agent. The readers here fall back on the same defaults for a spec that somehow lacks
them.
"""

from __future__ import annotations

from common import defaults
from common.api import specs_pb2
from common.timeutil import duration, duration_seconds


def with_defaults(spec: specs_pb2.ServiceSpec) -> specs_pb2.ServiceSpec:
    """A copy of `spec` with every default written in (the name excepted: the control
    API picks one)."""
    out = specs_pb2.ServiceSpec()
    out.CopyFrom(spec)
    if out.WhichOneof("mode") is None:
        out.replicated.replicas = 1
    container = out.task.container
    if not container.HasField("stop_grace_period"):
        container.stop_grace_period.CopyFrom(duration(defaults.STOP_GRACE_PERIOD))
    if not out.task.restart.HasField("condition"):
        out.task.restart.condition = defaults.restart_condition(out.WhichOneof("mode"))
    if not out.task.restart.HasField("delay"):
        out.task.restart.delay.CopyFrom(duration(defaults.RESTART_DELAY))
    for cfg in (out.update, out.rollback):
        if cfg.parallelism == 0 and not cfg.HasField("monitor"):
            # Not given at all (a spec made by hand, not by swarmctl): Docker's default.
            # With a monitor set, 0 is the user's "all at once".
            cfg.parallelism = defaults.UPDATE_PARALLELISM
        if not cfg.HasField("monitor"):
            cfg.monitor.CopyFrom(duration(defaults.UPDATE_MONITOR))
        if not cfg.HasField("delay"):
            cfg.delay.CopyFrom(duration(defaults.UPDATE_DELAY))
    return out


def restart_delay(spec: specs_pb2.TaskSpec) -> float:
    """How long the slot of a task of this spec waits before its replacement starts."""
    if spec.restart.HasField("delay"):
        return duration_seconds(spec.restart.delay)
    return defaults.RESTART_DELAY
