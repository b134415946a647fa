"""The embedded default store: an etcd child process with its data in the manager's
state dir, stopped when the manager stops.

It is a real etcd (the `etcd` binary on PATH); the manager talks to it exactly as it
talks to an external cluster given with `--etcd`. It has no TCP listener at all: its
client and peer URLs are unix sockets (mode 0600) next to its data dir, in the
manager's state dir (mode 0700), so only the manager's user can reach it. It has no
auth of its own and the cluster object in it holds the root CA key: a loopback TCP
port would hand that key to every local user.

etcd 3.4 insists that every URL has the form scheme://host:port, and binds a `unix://`
URL's host (and path) relative to its working directory. So etcd runs in the socket
directory and listens on `unix://etcd.sock:0` and `unix://etcd-peer.sock:0`: files
named `etcd.sock:0` and `etcd-peer.sock:0` (the `:0` is only there to satisfy the
parser). Clients connect to the absolute path (`unix:///STATE/etcd.sock:0`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import time
from pathlib import Path

from common.log import get_logger

_log = get_logger("etcd_embedded")
_PR_SET_PDEATHSIG = 1
CLIENT_SOCKET = "etcd.sock:0"
PEER_SOCKET = "etcd-peer.sock:0"
# Unix socket paths are limited to 108 bytes by the kernel.
_SUN_PATH_MAX = 107


class EmbeddedEtcdError(Exception):
    """The embedded etcd could not be started."""


# How much ahead of the manager the embedded etcd is scheduled (a negative nice value).
ETCD_NICE = -5


def _child_setup() -> None:
    # If the manager is killed (even with SIGKILL) its etcd goes too, so a restarted
    # manager never finds its data dir locked by an orphan.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # Its sockets are created owner-only (and then narrowed to 0600).
    os.umask(0o077)
    # etcd needs little CPU but needs it at once: a lease keep-alive applied late
    # costs the manager its lease (and, when it leads, its term), and a manager under
    # load keeps both cores busy. So etcd runs ahead of it where that is allowed (as
    # root); elsewhere it shares the CPU as before.
    with contextlib.suppress(OSError):
        os.nice(ETCD_NICE)


class EmbeddedEtcd:
    """One etcd member on unix sockets in `data_dir`'s parent directory, data in
    `data_dir`, output in `log_path`."""

    def __init__(self, data_dir: Path, log_path: Path, binary: str = "etcd") -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.binary = binary
        self.socket_dir = data_dir.parent
        self.client_socket = self.socket_dir / CLIENT_SOCKET
        self.peer_socket = self.socket_dir / PEER_SOCKET
        self.client_url = f"unix://{self.client_socket}"
        self._proc: asyncio.subprocess.Process | None = None
        self._pid_file = data_dir.parent / "etcd.pid"

    async def start(self, timeout: float = 30.0) -> str:
        """Start etcd and return its client URL once it answers."""
        path = shutil.which(self.binary)
        if path is None:
            raise EmbeddedEtcdError(
                f"no `{self.binary}` binary on PATH for the embedded store: install etcd "
                "(Debian: apt-get install etcd-server) or pass --etcd URL of an existing cluster"
            )
        if len(str(self.client_socket)) > _SUN_PATH_MAX:
            raise EmbeddedEtcdError(
                f"the embedded etcd's socket path {self.client_socket} is longer than the "
                f"{_SUN_PATH_MAX} bytes a unix socket allows: use a shorter --state-dir"
            )
        self._kill_stale()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Relative to etcd's working directory, the socket directory (see the top).
        client_url, peer_url = f"unix://{CLIENT_SOCKET}", f"unix://{PEER_SOCKET}"
        for attempt in range(3):
            args = [
                path,
                "--name",
                "swarmlet",
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"swarmlet={peer_url}",
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "5m",
                "--snapshot-count",
                "20000",
                "--log-level",
                "warn",
            ]
            log = self.log_path.open("ab")
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_child_setup,
                    start_new_session=True,
                    cwd=self.socket_dir,
                )
            finally:
                log.close()
            self._pid_file.write_text(str(self._proc.pid))
            if await self._wait_healthy(timeout):
                for sock in (self.client_socket, self.peer_socket):
                    os.chmod(sock, 0o600)
                _log.info(
                    "embedded etcd started",
                    url=self.client_url,
                    pid=self._proc.pid,
                    data_dir=str(self.data_dir),
                )
                return self.client_url
            if self._proc.returncode is None:
                await self.stop()
                break
            _log.warning("embedded etcd exited at start; retrying", attempt=attempt + 1)
        raise EmbeddedEtcdError(
            f"embedded etcd did not become healthy within {timeout:.0f}s; see {self.log_path}:\n"
            + self._log_tail()
        )

    async def _wait_healthy(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self._proc is not None
            if self._proc.returncode is not None:
                return False
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_unix_connection(self.client_socket)
                writer.write(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
                body = await reader.read()
                writer.close()
                if b'"health":"true"' in body:
                    return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        self._pid_file.unlink(missing_ok=True)
        for sock in (self.client_socket, self.peer_socket):
            sock.unlink(missing_ok=True)
        _log.info("embedded etcd stopped")

    def _kill_stale(self) -> None:
        """Stop an etcd left behind on our data dir by a manager that could not clean up."""
        try:
            pid = int(self._pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.data_dir).encode() in cmdline:
            _log.warning("stopping a stale embedded etcd", pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            for _ in range(100):  # its lock on the data dir goes with it
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
