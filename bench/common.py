"""What every benchmark shares: where results go, how it is stopped, the error that
says it could not run, and the facts about the run (commit, machine) its JSON records."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Signals a benchmark turns into KeyboardInterrupt (and ignores while it cleans up).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: stop the benchmark as Ctrl-C would, so that it cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def git_commit() -> str:
    """The short commit of the tree being measured, `-dirty` if it has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("-dirty" if dirty else "")


def machine(loadavg_start: list[float], **extra: Any) -> dict[str, Any]:
    """The machine a run was measured on, for its JSON (`extra` adds entries)."""
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **extra,
        "loadavg_start": loadavg_start,
        "loadavg_end": list(os.getloadavg()),
    }
