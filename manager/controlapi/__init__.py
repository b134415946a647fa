"""The control API (protos/control.proto): what swarmctl calls.

`api` is the gRPC servicer; `services`, `nodes`, `tasks` hold the logic per object;
`validation` checks and completes specs; `resolve` finds objects by id, name or unique
id prefix; `filters` holds what the list calls' filters share.
"""

from manager.controlapi.api import ControlAPI

__all__ = ["ControlAPI"]
