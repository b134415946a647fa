"""`swarm-manager`'s entry point: settles the memory allocator, quiets gRPC's C core,
then runs the CLI.

It imports nothing heavy before `manager.daemon.memalloc` has decided whether to execute
the command again on jemalloc, so a restart costs the interpreter's start and no more;
and nothing that imports grpc before `quiet_grpc_core` (common/log.py), which gRPC reads
only when it is imported.
"""

from __future__ import annotations

import sys

from manager.daemon.memalloc import AllocatorError, start_on_jemalloc


def run() -> None:
    try:
        start_on_jemalloc()
    except AllocatorError as exc:
        print(f"swarm-manager: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from common.log import quiet_grpc_core

    quiet_grpc_core()
    from manager.daemon.main import run as run_cli

    run_cli()
