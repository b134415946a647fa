"""The scheduler: assigns pending tasks to nodes.

`nodeinfo` keeps per-node counts up to date from cache events, `filters` decide which
nodes can take a task (each able to explain itself), `pipeline` runs the filters and
builds the "no suitable node (...)" explanation, and `scheduler` ranks the nodes that
pass and commits placements in batched transactions.
"""

from manager.scheduler.scheduler import Scheduler

__all__ = ["Scheduler"]
