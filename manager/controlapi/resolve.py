"""Finding an object by what the operator typed: a full id, a name, or a unique id prefix."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from common import states
from common.api import objects_pb2
from common.timeutil import timestamp_seconds
from manager.grpc_errors import InvalidArgumentError
from manager.store import NotFoundError

T = TypeVar("T")
_SHOWN = 5


def resolve(
    what: str, table: Mapping[str, T], ref: str, name_of: Callable[[T], str] | None = None
) -> T:
    """The one object of `table` that `ref` names; NotFoundError or InvalidArgumentError."""
    ref = ref.strip()
    if not ref:
        raise InvalidArgumentError(f"no {what} given: name one by id, id prefix or name")
    if ref in table:
        return table[ref]
    if name_of is not None:
        named = [o for o in table.values() if name_of(o) == ref]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            ids = ", ".join(sorted(getattr(o, "id", "?") for o in named)[:_SHOWN])
            raise InvalidArgumentError(
                f"{what} name {ref!r} is ambiguous: {len(named)} {what}s have it ({ids}); "
                "use the id instead"
            )
    # Keys first: reading a value can cost a decode (tasks are cached serialized).
    matches = [table[obj_id] for obj_id in table if obj_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(sorted(getattr(o, "id", "?") for o in matches)[:_SHOWN])
        raise InvalidArgumentError(
            f"{what} id prefix {ref!r} is ambiguous: it matches {len(matches)} {what}s ({ids}); "
            "give more characters of the id, or the name"
        )
    raise NotFoundError(f"{what} {ref!r} not found")


def resolve_task(
    tasks: Mapping[str, objects_pb2.Task],
    ref: str,
    named_in: Mapping[str, objects_pb2.Task] | None = None,
) -> objects_pb2.Task:
    """A task by id, id prefix, or name ("web.1": the newest task of that slot).

    Names are looked for among `named_in` if given (the tasks of the service the name
    starts with: every task read is decoded, and there may be 150,000), else all."""
    ref = ref.strip()
    pool = tasks if named_in is None else named_in
    named = [t for t in pool.values() if t.annotations.name == ref]
    if named:
        return max(
            named,
            key=lambda t: (t.desired_state <= states.RUNNING, timestamp_seconds(t.meta.created_at)),
        )
    return resolve("task", tasks, ref)
