"""Object ids: 25 characters of base36, as SwarmKit's, so ids look familiar to Swarm users."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase
ID_LENGTH = 25


def new_id() -> str:
    """A random id of ID_LENGTH base36 characters (~129 bits)."""
    return _base36_128(secrets.randbits(128))


# Two base36 digits per division: a new id is made for every task, and 13 big-number
# divisions cost half what 25 do.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _base36_128(value: int) -> str:
    """A number below 2**128 as ID_LENGTH base36 digits, zero-padded."""
    pairs = []
    for _ in range(ID_LENGTH // 2):
        value, rest = divmod(value, 1296)
        pairs.append(_PAIRS[rest])
    # 2**128 < 16 * 36**24: what is left is one digit.
    pairs.append(_ALPHABET[value])
    pairs.reverse()
    return "".join(pairs)


def to_base36(data: bytes, length: int) -> str:
    """`data` as a big-endian number in base36, left-padded with zeros to `length`."""
    value = int.from_bytes(data, "big")
    chars = []
    while value:
        value, rest = divmod(value, 36)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars)).rjust(length, "0")
