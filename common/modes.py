"""Service modes: the names of the `mode` oneof of a ServiceSpec, and what each means.

Replicated services and jobs have numbered slots; global ones have one slot per node.
Jobs run their tasks to completion (restart on failure only) instead of keeping them
running.
"""

from __future__ import annotations

from typing import Final

from common.api import specs_pb2

REPLICATED: Final = "replicated"
GLOBAL: Final = "global"
REPLICATED_JOB: Final = "replicated_job"
GLOBAL_JOB: Final = "global_job"
MODES = (REPLICATED, GLOBAL, REPLICATED_JOB, GLOBAL_JOB)
JOB_MODES = (REPLICATED_JOB, GLOBAL_JOB)
GLOBAL_MODES = (GLOBAL, GLOBAL_JOB)


def mode_of(spec: specs_pb2.ServiceSpec) -> str | None:
    """The spec's mode, one of MODES; None when the spec sets none (yet)."""
    return spec.WhichOneof("mode")


def is_job(spec: specs_pb2.ServiceSpec) -> bool:
    """The service runs its tasks to completion (a replicated or global job)."""
    return spec.WhichOneof("mode") in JOB_MODES


def is_global(spec: specs_pb2.ServiceSpec) -> bool:
    """The service has one task per eligible node (a global service or global job)."""
    return spec.WhichOneof("mode") in GLOBAL_MODES
