"""What the list calls' filters share (ListNodes, ListServices, ListTasks)."""

from __future__ import annotations

from collections.abc import Mapping


def labels_match(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether `labels` has every label in `wanted`: `key=value` asks for that value,
    `key=` (an empty value) for the key with any value, as `--filter label=` does."""
    return all(labels.get(k) == v or (v == "" and k in labels) for k, v in wanted.items())
