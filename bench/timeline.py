"""Where swarmlet's time goes: marks read from the manager's and agent's JSON logs.

The daemons log one JSON object per line with an ISO timestamp (UTC, microseconds).
For each swarmlet run the benchmark knows the service id and the wall-clock time of
the create call, so it can place the daemons' own events on the run's time line:

- the replicated orchestrator's `reconciled` events that created tasks,
- the scheduler's `scheduled` events that placed them,
- the agent's `task state` events (accepted, preparing, ready = container created,
  starting, running) of the service's tasks.

Everything runs on one host, so the clocks agree.
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.systems import Sample


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of `path` (other lines are skipped); [] if it is missing."""
    events = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            event["_t"] = datetime.datetime.fromisoformat(event["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        events.append(event)
    return events


def _when_total_reached(
    events: Iterable[tuple[float, int]], start: float, end: float, total: int
) -> float | None:
    """The time at which the counts of the events in [start, end] add up to `total`."""
    seen = 0
    for t, count in sorted(events):
        if start <= t <= end:
            seen += count
            if seen >= total:
                return t
    return None


def add_log_marks(log_dir: Path, samples: list[Sample]) -> bool:
    """Add `log_*` marks to the swarmlet samples from the logs in `log_dir`. False if
    there were no logs to read."""
    manager = read_events(log_dir / "manager.log")
    agent = read_events(log_dir / "agent.log")
    if not manager and not agent:
        return False
    created = [
        (e["_t"], int(e.get("created") or 0))
        for e in manager
        if str(e.get("component", "")).startswith("orchestrator") and e.get("event") == "reconciled"
    ]
    placed = [
        (e["_t"], int(e.get("placed") or 0))
        for e in manager
        if e.get("component") == "scheduler" and e.get("event") == "scheduled"
    ]
    # service id -> state -> timestamps of the agent's reports
    states: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in agent:
        if e.get("event") == "task state" and e.get("service_id"):
            states[e["service_id"]][str(e.get("state"))].append(e["_t"])
    for s in samples:
        if s.system != "swarmlet":
            continue
        end = s.wall0 + s.seconds + 1.0
        marks: dict[str, float | None] = {
            "log_tasks_created": _when_total_reached(created, s.wall0, end, s.replicas),
            "log_tasks_placed": _when_total_reached(placed, s.wall0, end, s.replicas),
        }
        reports = states.get(s.ref, {})
        for state, key, pick in (
            ("accepted", "log_first_accepted", min),
            ("accepted", "log_last_accepted", max),
            ("ready", "log_last_created", max),
            ("starting", "log_last_starting", max),
            ("running", "log_last_running", max),
        ):
            times = reports.get(state, [])
            marks[key] = pick(times) if len(times) >= s.replicas else None
        for key, t in marks.items():
            if t is not None:
                s.marks[key] = t - s.wall0
    return True
