"""The node's identity, kept in the agent's state dir so that a restarted agent is the
same node (and adopts its containers)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from common.ids import new_id

_VALID = re.compile(r"^[a-z0-9]{1,64}$")


class IdentityError(Exception):
    """The state dir holds something that is not a node id."""


def load_or_create_node_id(state_dir: Path) -> str:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "node_id"
    if path.exists():
        node_id = path.read_text().strip()
        if not _VALID.match(node_id):
            raise IdentityError(
                f"{path} does not hold a node id ({node_id[:40]!r}): "
                "remove it to make this a new node"
            )
        return node_id
    node_id = new_id()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(node_id + "\n")
    tmp.replace(path)
    return node_id
