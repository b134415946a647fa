"""Conversions between protobuf Timestamp/Duration, seconds and human text."""

from __future__ import annotations

import math
import re
import time

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from common.limits import MAX_DURATION_SECONDS

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def now_timestamp() -> Timestamp:
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def stamp_now(ts: Timestamp) -> None:
    """Set `ts` to now, in place (Timestamp.FromNanoseconds and a copy cost several
    times more, and the hot paths stamp every status report and every write)."""
    ns = time.time_ns()
    ts.seconds = ns // 1_000_000_000
    ts.nanos = ns % 1_000_000_000


def timestamp_seconds(ts: Timestamp) -> float:
    """Seconds since the epoch; 0.0 for an unset timestamp."""
    return ts.seconds + ts.nanos / 1e9


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def duration_seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def parse_duration(text: str) -> float:
    """Seconds in Go's duration syntax as the Docker CLI takes it ("5s", "1m30s", "300ms").

    A bare number is seconds. Raises ValueError naming the input when it is not a duration:
    also NaN, infinity, a negative one, or one longer than Go's durations go (int64
    nanoseconds, about 292 years), as Go's time.ParseDuration refuses an overflow.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = _unit_seconds(text)
    if math.isnan(value):
        raise ValueError(f"invalid duration {text!r}: not a number")
    if value < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    if value > MAX_DURATION_SECONDS:
        raise ValueError(
            f"invalid duration {text!r}: too long (at most {MAX_DURATION_SECONDS}s, about "
            "292 years)"
        )
    return value


def _unit_seconds(text: str) -> float:
    """Seconds of a duration with units ("1m30s")."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f'invalid duration {text!r}: use a number with a unit, like "5s", "300ms" or "1m30s"'
        )
    return total


def format_duration(seconds: float) -> str:
    """A compact Go-style duration: 5s, 1m30s, 300ms."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or not out:
        out += f"{secs}s"
    return out


def human_ago(seconds: float) -> str:
    """Like Docker's units.HumanDuration: "Less than a second", "8 seconds", "About a minute"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    days = hours // 24
    if days < 14:
        return f"{days} days"
    return f"{days // 7} weeks"
