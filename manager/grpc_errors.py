"""Turning manager errors into gRPC status codes, so every failure a client sees carries
a proper code and a message that says what was wrong and what to do."""

from __future__ import annotations

import contextlib
import functools
import inspect
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


class ResourceExhaustedError(Exception):
    """The answer would be larger than a client takes in one message: RESOURCE_EXHAUSTED."""


_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
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
        ResourceExhaustedError,
        NotFoundError,
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


class Undecodable:
    """What a request that did not decode is handed to the handler as (by `tolerant`),
    so that it can answer INVALID_ARGUMENT (`undecodable_details` says why)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or whatever a deserializer raises
            return Undecodable(exc)

    return run


def undecodable_details(method: str, request: Undecodable) -> str:
    return f"the request to {method} is not a valid message: {request.error}"


class UndecodableIsInvalidArgument(grpc.aio.ServerInterceptor):
    """Answer a request whose bytes are not a message of the method's type with
    INVALID_ARGUMENT. grpc.aio itself answers it with UNKNOWN ("Unexpected DecodeError
    raised by servicer method") and logs an error, as if the servicer had failed."""

    def __init__(self) -> None:
        # The wrapped handler of each method (gRPC asks for it on every call).
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        wrapped = self._wrap(method, handler)
        if handler is not None:
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.request_streaming:
            return self._wrap_streaming(method, handler)
        deserialize = tolerant(handler.request_deserializer)

        async def refuse(request: Undecodable, context: Context) -> NoReturn:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                undecodable_details(method, request),
            )
            raise AssertionError("abort returned")  # pragma: no cover

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def checked_unary(request: Any, context: Context) -> Any:
                if isinstance(request, Undecodable):
                    await refuse(request, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked_unary,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream
            if inspect.isasyncgenfunction(stream):

                async def checked_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                    if isinstance(request, Undecodable):
                        await refuse(request, context)
                    async for message in stream(request, context):
                        yield message

                behaviour: Any = checked_stream
            else:  # a coroutine that writes with context.write()

                async def checked_writer(request: Any, context: Context) -> Any:
                    if isinstance(request, Undecodable):
                        await refuse(request, context)
                    return await stream(request, context)

                behaviour = checked_writer
            return grpc.unary_stream_rpc_method_handler(
                behaviour,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_streaming(self, method: str, handler: Any) -> Any:
        """A stream of requests (Heartbeats): the first message that does not decode
        ends the call with INVALID_ARGUMENT."""
        inner = handler.stream_stream
        if inner is None or not inspect.isasyncgenfunction(inner):
            return handler
        deserialize = tolerant(handler.request_deserializer)

        async def checked_bidi(
            requests: AsyncIterator[Any], context: Context
        ) -> AsyncIterator[Any]:
            async def decoded() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Undecodable):
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"a message to {method} is not a valid message: {request.error}",
                        )
                    yield request

            async for message in inner(decoded(), context):
                yield message

        return grpc.stream_stream_rpc_method_handler(
            checked_bidi,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """What every gRPC server of the manager is created with."""
    return [UndecodableIsInvalidArgument()]
