"""Object ids: 25 characters of base36, as SwarmKit's, so ids look familiar to Swarm users."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase
ID_LENGTH = 25


def new_id() -> str:
    """A random id of ID_LENGTH base36 characters (~129 bits)."""
    value = secrets.randbits(128)
    chars = []
    for _ in range(ID_LENGTH):
        value, rest = divmod(value, 36)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars))


def to_base36(data: bytes, length: int) -> str:
    """`data` as a big-endian number in base36, left-padded with zeros to `length`."""
    value = int.from_bytes(data, "big")
    chars = []
    while value:
        value, rest = divmod(value, 36)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars)).rjust(length, "0")
