"""The agent's Prometheus metrics (a hollow farm's agents add up into one set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common import states
from common.metrics import by_state

TASK_STATES = Counter(
    "swarmlet_agent_task_states_total", "Task states reported, by state.", ["state"]
)
TASK_STATE = by_state(TASK_STATES, states.state_name)
SESSIONS_UP = Gauge("swarmlet_agent_sessions", "Agents of this process in session with a manager.")
HEARTBEATS_SENT = Counter("swarmlet_agent_heartbeats_total", "Heartbeats sent to managers.")
REPORT_BATCHES = Counter("swarmlet_agent_status_batches_total", "Status report batches sent.")
REPORT_SECONDS = Histogram(
    "swarmlet_agent_status_report_seconds",
    "Time from sending a status report to the manager's answer: how late the manager "
    "learns of a task's state at most (it accepts calls one at a time).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
ASSIGNMENT_MESSAGES = Counter(
    "swarmlet_agent_assignment_messages_total", "Session messages that carried assignments."
)
ENGINE_CALLS = Histogram(
    "swarmlet_agent_engine_call_seconds",
    "Duration of Docker engine calls.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
