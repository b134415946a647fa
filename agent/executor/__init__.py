"""The executor seam, like SwarmKit's exec.Controller: how a task's container is prepared,
started, waited for, stopped and removed. `docker` is the real executor."""

from agent.executor.base import (
    AdoptedContainer,
    Controller,
    Executor,
    ExecutorError,
    ExitStatus,
    LogLine,
    RunningInfo,
)

__all__ = [
    "AdoptedContainer",
    "Controller",
    "Executor",
    "ExecutorError",
    "ExitStatus",
    "LogLine",
    "RunningInfo",
]
