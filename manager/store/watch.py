"""One etcd watch stream over a key prefix, opened from a revision the caller chooses.

The cache reopens the stream itself after a failure, from the last revision it has
applied: etcd3aio's own reconnect resumes from the last response's header revision,
which may be ahead of events not yet delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from etcd3aio import Etcd3Client, EtcdError, prefix_range_end
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchResponse


class WatchCanceledError(EtcdError):
    """etcd canceled the watch (other than for compaction)."""


async def open_watch(
    client: Etcd3Client, prefix: bytes, start_revision: int
) -> AsyncIterator[WatchResponse]:
    """Responses of a watch on `prefix` from `start_revision`; raises when the stream breaks."""
    assert client.watch is not None
    service = client.watch

    async def requests() -> AsyncIterator[WatchRequest]:
        yield WatchRequest(
            create_request=WatchCreateRequest(
                key=prefix, range_end=prefix_range_end(prefix), start_revision=start_revision
            )
        )
        await asyncio.Event().wait()  # keep the request side open

    call = service._stub.Watch(requests(), metadata=service._metadata or None)
    try:
        async for response in call:
            yield response
    finally:
        call.cancel()
