"""The errors swarmctl reports to the user: one `Error: ...` line and an exit code."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class SwarmctlError(Exception):
    """A failure to report as `Error: <message>` on stderr, exiting with `exit_code`.

    Commands raise it (or the client raises it for a gRPC error); the command group
    prints it, so no traceback ever reaches the user.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class NotFound(SwarmctlError):
    """The manager has no such object (gRPC NOT_FOUND)."""


class ManagerUnreachable(SwarmctlError):
    """No manager answered at the address swarmctl was pointed at."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"cannot reach a swarmlet manager at {address} ({reason}). "
            "Start one with 'swarm-manager' (or 'make demo'), or point swarmctl at one "
            "with -H/--host or SWARMCTL_HOST."
        )
        self.address = address
        self.reason = reason
