"""Random service names for services created without --name, in Docker's style."""

from __future__ import annotations

import secrets

_ADJECTIVES = [
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "laughing",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
]
_SCIENTISTS = [
    "babbage",
    "curie",
    "darwin",
    "einstein",
    "faraday",
    "galileo",
    "hopper",
    "johnson",
    "kepler",
    "lovelace",
    "meitner",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "turing",
    "volta",
    "wozniak",
    "yalow",
]


def random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SCIENTISTS)}"
