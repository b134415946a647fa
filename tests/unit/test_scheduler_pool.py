"""A scheduler pool's lanes stay sorted and current through fills and flushes.

The flush merges the nodes queued since the last group into a lane; entries of the
lane worse than all of the queue, or better than all of it, stay where they are, so
these tests build queues that fall before, after and among the lane's entries.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.api import objects_pb2
from manager.domain.constraints import Constraint
from manager.scheduler.nodeinfo import (
    FIRST,
    INFO,
    NODE_ID,
    VERSION,
    Entry,
    NodeInfo,
    NodeInfos,
    Pool,
)
from tests.unit import factories as f

LOAD = ("svc", 0, 0, ())


def _entry(info: NodeInfo) -> Entry:
    return (info.total, 0, info.id, info.version, info)


def _pool(infos: NodeInfos, insert_at_most: int = Pool.INSERT_AT_MOST) -> Pool:
    def make() -> Pool:
        pool = Pool(lambda i: i.usable, _entry, None, 1)
        # Small queues go in one by one: 0 sends every queue through the merge.
        pool.INSERT_AT_MOST = insert_at_most
        return pool

    return infos.pool("test", make)


def _current(pool: Pool) -> list[Entry]:
    return [e for e in pool.lanes[()] if e[VERSION] == e[INFO].version]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=40),
    st.lists(st.lists(st.tuples(st.integers(0, 39), st.sampled_from([1, -1]))), max_size=6),
    st.sampled_from([0, Pool.INSERT_AT_MOST]),
)
def test_flushes_keep_the_lane_sorted_with_one_current_entry_per_node(
    totals: list[int], rounds: list[list[tuple[int, int]]], insert_at_most: int
) -> None:
    infos = NodeInfos()
    infos.rebuild(f.nodes(*(f.node(f"n{i:02d}") for i in range(len(totals)))), [])
    by_index = sorted(infos.infos.values(), key=lambda i: i.id)
    for info, total in zip(by_index, totals, strict=True):
        for _ in range(total):
            info.apply(LOAD, 1)
    pool = _pool(infos, insert_at_most)
    for changes in rounds:
        for index, sign in changes:
            info = by_index[index % len(by_index)]
            if sign < 0 and info.total == 0:
                continue
            info.apply(LOAD, sign)
        pool = _pool(infos, insert_at_most)
        lane = pool.lanes[()]
        assert lane == sorted(lane, reverse=True)
        current = _current(pool)
        assert sorted(e[NODE_ID] for e in current) == sorted(i.id for i in by_index)
        assert all(e[FIRST] == e[INFO].total for e in current)


def test_a_queue_worse_than_the_whole_lane_goes_in_front_of_it() -> None:
    infos = NodeInfos()
    infos.rebuild(f.nodes(*(f.node(f"n{i}") for i in range(200))), [])
    pool = _pool(infos)
    drawn = [pool.lanes[()].pop()[INFO] for _ in range(100)]  # the best hundred
    for info in drawn:
        info.apply(LOAD, 1)
    pool = _pool(infos)
    lane = pool.lanes[()]
    assert lane == sorted(lane, reverse=True)
    assert [e[FIRST] for e in lane[:100]] == [1] * 100
    assert [e[FIRST] for e in lane[100:]] == [0] * 100


def test_constraints_read_the_labels_the_info_keeps() -> None:
    info = NodeInfo(f.node("n1", labels={"zone": "East"}))
    east = Constraint("node.labels.zone", True, "east").info_matcher()
    not_west = Constraint("node.labels.zone", False, "west").info_matcher()
    has_disk = Constraint("node.labels.disk", True, "ssd").info_matcher()
    assert east(info)
    assert not_west(info)
    assert not has_disk(info)
    # The labels are the node object's when it was set: a new object, new labels.
    changed = objects_pb2.Node()
    changed.CopyFrom(info.node)
    changed.spec.annotations.labels["zone"] = "west"
    info.node = changed
    assert not east(info)
    assert not not_west(info)
    engine = objects_pb2.Node(id="n2")
    engine.description.engine.labels["gpu"] = "yes"
    assert Constraint("engine.labels.gpu", True, "YES").info_matcher()(NodeInfo(engine))
