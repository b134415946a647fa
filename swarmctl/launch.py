"""`swarmctl`'s entry point: quiets gRPC's own logging, then runs the CLI.

gRPC's C core writes lines of its own to stderr before absl logging is set up ("I1207
... Handshake failed with error SSL_ERROR_SSL ..."), around swarmctl's one-line errors,
which already say what failed. It reads GRPC_VERBOSITY when grpc is imported, so this
module sets it before importing anything that imports grpc; an explicit setting wins.
"""

from __future__ import annotations

import os


def run() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from swarmctl.main import run as run_cli

    run_cli()
