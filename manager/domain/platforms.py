"""Platform matching: whether a node's OS and architecture are among a task's platforms
(`--platform`, or the platforms of the image's manifest list).

Engines report the architecture as `uname -m` has it (x86_64, aarch64); images name it
as Go's GOARCH does (amd64, arm64): both are compared as the latter, without regard to
case. A platform without an OS (or architecture) matches any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from common.api import types_pb2

# What engines report (uname -m) -> what images say (Go's GOARCH), compared as the latter.
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
}

PlatformMatch = Callable[[types_pb2.Platform], bool]


def normalise_arch(arch: str) -> str:
    """An architecture as images name it (GOARCH), lower case."""
    return _ARCH_ALIASES.get(arch.lower(), arch.lower())


def platform_matcher(wanted: Iterable[types_pb2.Platform]) -> PlatformMatch:
    """Whether a node's platform is one of `wanted` (an empty list: any is), with the
    wanted ones folded once, for a pass over many nodes."""
    folded = [
        (p.os.lower(), normalise_arch(p.architecture) if p.architecture else "") for p in wanted
    ]
    if not folded:
        return lambda platform: True

    def match(platform: types_pb2.Platform) -> bool:
        os_ = platform.os.lower()
        arch = normalise_arch(platform.architecture)
        return any((not o or o == os_) and (not a or a == arch) for o, a in folded)

    return match


def matches_platforms(wanted: Iterable[types_pb2.Platform], platform: types_pb2.Platform) -> bool:
    """Whether `platform` (a node's) is one of `wanted` (an empty list: any is)."""
    return platform_matcher(wanted)(platform)
