"""`exec_daemon` (scripts/lib.sh), how the scripts start dockerd, the registry and
swarmlet's daemons: the daemon keeps none of its caller's descriptors but 0-2 (a lock
the caller holds is not held on by the daemon), runs in a session of its own, and `$!`
is its own pid. Real bash, a real background process."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
set -euo pipefail
source "$ROOT/scripts/lib.sh"
exec 7>>"$LOCK"          # a descriptor of the caller's, as flock(1) would leave one
(exec_daemon bash -c 'ls /proc/$$/fd | sort -n | tr "\\n" " "; echo;
                      ps -o sid= -p $$; echo $$; exec sleep 30') >"$OUT" 2>&1 </dev/null &
echo $!
"""


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
    launched = int(run.stdout.split()[-1])
    try:
        for _ in range(100):
            lines = out.read_text().splitlines() if out.exists() else []
            if len(lines) >= 3:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        fds, sid, pid = lines[0].split(), int(lines[1]), int(lines[2])
        assert fds == ["0", "1", "2"]
        assert sid == pid  # a session of its own
        assert pid == launched  # $! is the daemon itself
        fd_links = {p.resolve() for p in Path(f"/proc/{launched}/fd").iterdir()}
        assert lock.resolve() not in fd_links
    finally:
        subprocess.run(["kill", str(launched)], check=False)
