"""The scheduler benchmark's in-memory pass (bench/scheduler_workload.py) places what it
says it placed and reports both its wall-clock and its CPU time."""

from __future__ import annotations

import pytest

from bench.scheduler_workload import VARIANTS, hollow_nodes, place_in_memory, workload


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_in_memory_pass_places_every_task_and_times_its_cpu(variant: str) -> None:
    nodes = hollow_nodes(12)
    sample = place_in_memory(nodes, workload(variant, 60, 3))
    assert (sample.placed, sample.unplaced, sample.overcommitted) == (60, 0, 0)
    assert sample.seconds > 0
    assert sample.cpu_seconds > 0
    # Nodes of zone-a fail the constraint variant's constraint: 8 of 12 take tasks.
    assert sample.nodes_used == (8 if variant == "constraint" else 12)
