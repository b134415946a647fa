"""`exec_daemon` (scripts/lib.sh), how the scripts start dockerd, the registry and
swarmlet's daemons: the daemon keeps none of its caller's descriptors but 0-2 (a lock
the caller holds is not held on by the daemon), runs in a session of its own, and `$!`
is its own pid. Real bash, a real background process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
set -euo pipefail
source "$ROOT/scripts/lib.sh"
exec 7>>"$LOCK"          # a descriptor of the caller's, as flock(1) would leave one
(exec_daemon sleep 30) >"$OUT" 2>&1 </dev/null &
echo $!
"""


def _daemon(pid: int) -> tuple[list[int], int]:
    """Once `pid` runs sleep: its descriptors and its session id (from /proc)."""
    for _ in range(200):
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
            break
        time.sleep(0.01)
    fds = sorted(int(p.name) for p in Path(f"/proc/{pid}/fd").iterdir())
    stat = Path(f"/proc/{pid}/stat").read_text()
    session = int(stat.rsplit(")", 1)[1].split()[3])
    return fds, session


def test_the_daemon_keeps_only_0_1_2_in_its_own_session(tmp_path: Path) -> None:
    lock, out = tmp_path / "lock", tmp_path / "out"
    lock.touch()
    run = subprocess.run(
        ["bash", "-c", SCRIPT],
        env={"ROOT": str(ROOT), "LOCK": str(lock), "OUT": str(out), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid = int(run.stdout.split()[-1])  # $!: the subshell, exec'd into setsid, into sleep
    try:
        fds, session = _daemon(pid)
        assert fds == [0, 1, 2]
        assert session == pid  # a session of its own
    finally:
        subprocess.run(["kill", str(pid)], check=False)
