"""`swarm-agent`'s entry point: quiets gRPC's C core before anything imports grpc (it
reads GRPC_VERBOSITY only then; common/log.py says why), then runs the CLI (`main`)."""

from __future__ import annotations

from common.log import quiet_grpc_core


def run() -> None:
    quiet_grpc_core()
    from agent.main import run as run_cli

    run_cli()
