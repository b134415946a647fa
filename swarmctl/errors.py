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
    """No manager answered at the address swarmctl was pointed at: a command that works
    through several objects stops at once rather than failing each one."""

    def __init__(self, address: str, reason: str, message: str = "") -> None:
        super().__init__(
            message
            or f"cannot reach a swarmlet manager at {address} ({reason}). "
            "Start one with 'swarm-manager' (or 'make demo'), or point swarmctl at one "
            "with -H/--host or SWARMCTL_HOST."
        )
        self.address = address
        self.reason = reason


class TLSFailure(ManagerUnreachable):
    """Something answers at the address, but the TLS handshake with it failed: a
    certificate problem (the message says which), not a missing manager."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(address, problem, f"TLS handshake with {address} failed: {problem}")


class NotControlAPI(ManagerUnreachable):
    """The address serves gRPC, but not the control API: a manager's dispatcher or CA
    port, which serve agents."""

    def __init__(self, address: str) -> None:
        super().__init__(
            address,
            "not the control API",
            f"{address} does not serve the control API: it serves agents (a manager's "
            "dispatcher, --listen-addr, or its CA port, the next one). Point swarmctl at the "
            "manager's control socket (unix://<state-dir>/control.sock on its host) or at "
            "the address given to swarm-manager --control-addr.",
        )
