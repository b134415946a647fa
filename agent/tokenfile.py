"""Where the agent's join token comes from, other than a command line every user of the
host can read in `ps`: the environment (SWARMLET_JOIN_TOKEN) or a file only its owner
can read (`--join-token-file`). `--join-token` still works, for compatibility."""

from __future__ import annotations

import stat
from pathlib import Path

# A token file must not be readable, writable or executable by group or others.
_PRIVATE_MASK = stat.S_IRWXG | stat.S_IRWXO


class TokenFileError(ValueError):
    """The join token file cannot be used; the message says why and what to do."""


def read_token_file(path: Path) -> str:
    """The token in `path`, a file of mode 0600 (or stricter); surrounding blanks dropped."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TokenFileError(f"join token file {path} does not exist") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read join token file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"join token file {path} is not a regular file")
    if info.st_mode & _PRIVATE_MASK:
        raise TokenFileError(
            f"join token file {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or "
            f"others can read it. Make it private with `chmod 600 {path}` (the token lets "
            "any host join the cluster)"
        )
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read join token file {path}: {exc}") from None
    if not token:
        raise TokenFileError(f"join token file {path} is empty: write the SWMTKN-1-... token in it")
    return token


def choose_token(given: str, token_file: Path | None) -> str:
    """The join token from --join-token (or SWARMLET_JOIN_TOKEN) or from --join-token-file,
    refusing both at once: which one was meant is not for us to guess."""
    if token_file is None:
        return given
    if given:
        raise TokenFileError(
            "the join token is given twice: by --join-token-file and by --join-token or "
            "SWARMLET_JOIN_TOKEN; give one"
        )
    return read_token_file(token_file)
