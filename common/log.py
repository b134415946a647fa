"""Logging set-up shared by every swarmlet process.

structlog with key=value events. Readable console output on a TTY, one JSON object
per line otherwise (files, journald, CI). Callers bind node/service/task ids with
`log.bind(...)` or `structlog.contextvars.bind_contextvars(...)`.

gRPC's C core writes its own log lines (glog style, "I1207 12:00:00 ... Handshake
failed ...") straight to file descriptor 2, around Python's logging, so they cannot be
rendered as JSON; `quiet_grpc_core` silences them, in each daemon's entry point before
grpc is imported. What they report reaches us anyway as exceptions and status codes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def setup_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the stdlib root logger (used by grpc, docker, etcd3aio)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib; route them through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)


# Read once, when grpc is imported; "NONE" is the only level at which gRPC 1.85's C
# core writes nothing (its ERROR lines, like a failed TLS handshake, are logged at I).
GRPC_VERBOSITY = "GRPC_VERBOSITY"


def quiet_grpc_core() -> None:
    """Keep gRPC's C core from writing to stderr, unless the operator set GRPC_VERBOSITY
    (to debug gRPC itself, accepting lines that are not JSON). Call before grpc is imported."""
    os.environ.setdefault(GRPC_VERBOSITY, "NONE")


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger for `name` (a module or component) with `bound` key=values on every event."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component=name, **bound)
    return logger
