"""Turning manager errors into gRPC status codes, so every failure a client sees carries
a proper code and a message that says what was wrong and what to do."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from common.log import get_logger
from manager.store import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)

_log = get_logger("grpc")

Context = grpc.aio.ServicerContext[Any, Any]


class InvalidArgumentError(Exception):
    """The request is malformed or names something ambiguously: INVALID_ARGUMENT."""


class FailedPreconditionError(Exception):
    """The request cannot be done in the current state: FAILED_PRECONDITION."""


class PermissionDeniedError(Exception):
    """The caller's certificate does not allow this call: PERMISSION_DENIED."""


class UnauthenticatedError(Exception):
    """The caller presented no valid credentials (or a wrong join token): UNAUTHENTICATED."""


_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (TooLargeError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreError, grpc.StatusCode.INTERNAL),
]


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return None


async def abort_with(context: Context, exc: BaseException) -> NoReturn:
    code = status_for(exc) or grpc.StatusCode.INTERNAL
    message = str(exc) or type(exc).__name__
    if code is grpc.StatusCode.INTERNAL:
        _log.error("internal error", error=message, exc_info=exc)
    await context.abort(code, message)
    raise AssertionError("abort returned")  # pragma: no cover


@contextlib.asynccontextmanager
async def abort_on_store_errors(context: Context) -> AsyncIterator[None]:
    """Abort the call with the matching status when the body raises a known error."""
    try:
        yield
    except (
        StoreError,
        InvalidArgumentError,
        FailedPreconditionError,
        PermissionDeniedError,
        UnauthenticatedError,
    ) as exc:
        await abort_with(context, exc)


R = TypeVar("R")


def rpc(
    handler: Callable[[Any, Any, Context], Awaitable[R]],
) -> Callable[[Any, Any, Context], Awaitable[R]]:
    """Decorate a unary servicer method: known errors become status codes, anything
    else INTERNAL (logged with its traceback), never a bare exception to the client.
    A servicer with an `authorize(context, method name)` method has it called first."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            authorize = getattr(self, "authorize", None)
            if authorize is not None:
                authorize(context, handler.__name__)
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)

    return wrapper
