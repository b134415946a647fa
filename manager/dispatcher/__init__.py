"""The dispatcher: agents' sessions with the manager (see protos/dispatcher.proto)."""

from manager.dispatcher.dispatcher import Dispatcher

__all__ = ["Dispatcher"]
