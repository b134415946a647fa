"""The manager's memory allocator: jemalloc, set up to stay compact, when the host has it.

Why: at thousands of nodes most of the manager's memory is allocated through malloc,
not by Python's own allocator: gRPC's core (buffers for every connection and call)
and upb (every decoded message), churned by every heartbeat, report and assignment.
glibc's malloc keeps what that churn frees in many arenas and partly used chunks; at
5,000 nodes and 150,000 tasks the manager held 790 MiB idle and peaked at 1,011-1,026
MiB. On jemalloc with one arena, no thread caches and freed pages handed back at once
(`MALLOC_CONF` below) the same runs held 695 MiB idle and peaked at 935 MiB, and were
no slower (docs/performance.md, "The manager on jemalloc").

How: a process cannot change its malloc once it runs, so `swarm-manager` executes
itself again, once, with jemalloc in `LD_PRELOAD` (and `MALLOC_CONF`, unless the
operator set one), before it imports anything else (`manager/daemon/launch.py`). The second
start puts the environment back as it was, so the processes the manager starts (the
embedded etcd) inherit the operator's environment, not the preload.

`SWARMLET_MALLOC` chooses: `auto` (the default: jemalloc if installed, else the
system's malloc), `jemalloc` (refuse to start without it) or `system`.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import sysconfig
from collections.abc import Mapping, MutableMapping, Sequence

CHOICE_VARIABLE = "SWARMLET_MALLOC"
CHOICES = ("auto", "jemalloc", "system")
LIBRARY = "libjemalloc.so.2"
# One arena, no per-thread caches, and pages freed go back to the system at once
# instead of after jemalloc's default 10 s. Measured together, not one by one: with
# them the peak was 935 MiB; jemalloc with its defaults held more than glibc (1,098).
MALLOC_CONF = "narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"
# Set for the second start: the environment variables the first one changed, as they
# were (null: unset), as JSON.
RESTORE_VARIABLE = "SWARMLET_MALLOC_RESTORE"
_CHANGED = ("LD_PRELOAD", "MALLOC_CONF")


class AllocatorError(Exception):
    """The allocator asked for cannot be had; the message says what to do."""


def search_dirs() -> list[str]:
    """Where Debian, Ubuntu and most other distributions install shared libraries."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs = [f"/usr/lib/{multiarch}"] if multiarch else []
    return [*dirs, "/usr/lib64", "/usr/lib", "/usr/local/lib"]


def find_jemalloc(dirs: Sequence[str] | None = None) -> str | None:
    """The path of jemalloc's shared library, or None if it is not installed."""
    for directory in search_dirs() if dirs is None else dirs:
        path = os.path.join(directory, LIBRARY)
        if os.path.isfile(path):
            return path
    return None


def preload_env(environ: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to start the manager again with, on jemalloc; None to go on as
    it is (already started so, the system's malloc chosen, or no jemalloc found).
    Raises AllocatorError for a choice that cannot be met."""
    choice = environ.get(CHOICE_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise AllocatorError(
            f"{CHOICE_VARIABLE}={environ[CHOICE_VARIABLE]!r} is not an allocator: use "
            f"{', '.join(CHOICES)} (auto: jemalloc when installed)"
        )
    if RESTORE_VARIABLE in environ or choice == "system":
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if "libjemalloc" in preloaded:
        return None  # the operator preloads it already (with a configuration of theirs)
    if library is None:
        if choice == "jemalloc":
            raise AllocatorError(
                f"{CHOICE_VARIABLE}=jemalloc, but {LIBRARY} is not installed in "
                f"{', '.join(search_dirs())}: install it (apt-get install libjemalloc2) or "
                f"set {CHOICE_VARIABLE}=auto"
            )
        return None
    env = dict(environ)
    env[RESTORE_VARIABLE] = json.dumps({name: environ.get(name) for name in _CHANGED})
    # LD_PRELOAD takes a space- or colon-separated list; the operator's entries stay.
    env["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    if not env.get("MALLOC_CONF"):
        env["MALLOC_CONF"] = MALLOC_CONF
    return env


def restore_env(environ: MutableMapping[str, str]) -> None:
    """Undo what `preload_env` changed (in the restarted manager's own environment), so
    that the processes it starts do not inherit the preload."""
    saved = environ.pop(RESTORE_VARIABLE, None)
    if saved is None:
        return
    try:
        values = json.loads(saved)
    except ValueError:
        return  # not ours to read: leave the environment alone
    for name in _CHANGED:
        value = values.get(name) if isinstance(values, dict) else None
        if isinstance(value, str):
            environ[name] = value
        else:
            environ.pop(name, None)


def start_on_jemalloc() -> None:
    """Execute this command again on jemalloc if that is wanted and possible (does not
    return then); otherwise, or in the restarted process, return and go on."""
    env = preload_env(os.environ, find_jemalloc())
    if env is None:
        restore_env(os.environ)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps how Python was called (a script, or -m module, with its options).
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def in_use() -> str:
    """The allocator this process runs on: "jemalloc" or "system"."""
    return "jemalloc" if hasattr(ctypes.CDLL(None), "mallctl") else "system"
