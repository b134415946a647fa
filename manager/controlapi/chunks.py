"""Answers of the list calls in wire form: whole (within gRPC's message limit) or cut
into the parts of a stream.

A list answer is made of pieces, each the serialized form of a response holding one
object (a task, a node, a service and its counts). Put end to end, serialized messages
of one type decode as one message with their repeated and map fields concatenated, so
the pieces joined are the whole response, and any run of them is a valid response too:
a List*Stream call sends runs of about CHUNK_BYTES, and a client that joins what it
receives decodes the same response as the unary call's (protos/control.proto, "Lists").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from manager.grpc_errors import ResourceExhaustedError

# What a gRPC client takes in one message unless told otherwise (grpc's default
# max_receive_message_length); a larger answer fails there with "Received message
# larger than max", which says nothing of what to do.
MESSAGE_LIMIT = 4 * 1024 * 1024
# The size of a stream's messages: well under the limit, and large enough that a
# 100,000-task list is a few dozen messages.
CHUNK_BYTES = 1024 * 1024


class Serialized:
    """A response already in wire form. The control server sends it as it is: its
    serializer calls `SerializeToString`, as it would on a message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # protobuf's name, for the serializer
        return self.data


def check_size(size: int, count: int, what: str, stream: str) -> None:
    """Refuse a unary answer of `size` bytes that no default client would take in."""
    if size > MESSAGE_LIMIT:
        raise ResourceExhaustedError(
            f"the answer ({count} {what}, {size / 2**20:.1f} MiB) is larger than one gRPC "
            f"message may be ({MESSAGE_LIMIT // 2**20} MiB): call {stream}, which sends the "
            "same list in parts (swarmctl does), or narrow the list with filters"
        )


def whole(pieces: Sequence[bytes], what: str, stream: str) -> Serialized:
    """The pieces as one unary answer, if it is within the message limit."""
    check_size(sum(len(p) for p in pieces), len(pieces), what, stream)
    return Serialized(b"".join(pieces))


def chunked(pieces: Iterable[bytes], limit: int = CHUNK_BYTES) -> Iterator[Serialized]:
    """The pieces in order, as messages of at most `limit` bytes (a piece larger than
    that goes alone). An empty list is one empty message, so that the stream says
    "nothing" rather than nothing at all."""
    run: list[bytes] = []
    size = 0
    sent = False
    for piece in pieces:
        if run and size + len(piece) > limit:
            yield Serialized(b"".join(run))
            sent = True
            run, size = [], 0
        run.append(piece)
        size += len(piece)
    if run or not sent:
        yield Serialized(b"".join(run))
