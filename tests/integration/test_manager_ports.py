"""A manager's ports are its own: a second manager started on a taken address exits with
"address already in use" instead of sharing the port (gRPC's SO_REUSEPORT would let it,
and split the agents' connections between two clusters). Real managers, real ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from common.api import control_pb2
from tests.harness import Manager, free_port, wait_until

pytestmark = pytest.mark.slow


def free_run(length: int) -> int:
    """A free port whose next `length - 1` ports are free too."""
    for _ in range(100):
        first = free_port()
        probes = [socket.socket() for _ in range(length)]
        try:
            for i, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + i))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first
    raise RuntimeError(f"no {length} consecutive free ports")


@pytest.fixture(scope="module")
def first() -> Iterator[tuple[Manager, int, str]]:
    """A manager with its dispatcher on port P+1 (its CA on P+2), P free, and a control
    address over TCP; yields it, P and the control address."""
    base = free_run(3)
    control = f"127.0.0.1:{free_port()}"
    manager = Manager(
        extra=["--listen-addr", f"127.0.0.1:{base + 1}", "--control-addr", control]
    ).start()
    try:
        yield manager, base, control
    finally:
        manager.cleanup()


def refused(second: Manager, *needles: str) -> None:
    """`second` exits 1 with a one-line reason holding `needles`, without ever answering."""
    second.start(wait=False)
    try:
        code = wait_until(
            lambda: second.process.proc is not None and second.process.proc.poll() is not None,
            60,
            what="the second manager to exit",
        )
        assert code
        assert second.process.proc is not None
        assert second.process.proc.returncode == 1, second.process.log()
        log = second.process.log()
        assert "Traceback" not in log
        for needle in needles:
            assert needle in log, log
    finally:
        second.cleanup()


def still_serving(manager: Manager) -> None:
    manager.api().GetCluster(control_pb2.GetClusterRequest(), timeout=5)
    assert manager.process.running


def test_a_second_manager_on_the_same_listen_addr_exits(first: tuple[Manager, int, str]) -> None:
    manager, base, _ = first
    addr = f"127.0.0.1:{base + 1}"
    second = Manager(extra=["--listen-addr", addr])
    refused(second, f"cannot listen on {addr}: address already in use", "--listen-addr")
    still_serving(manager)


def test_a_second_manager_whose_ca_port_is_taken_exits(first: tuple[Manager, int, str]) -> None:
    # Its dispatcher on the free port P, its CA on P+1: the first manager's dispatcher.
    manager, base, _ = first
    second = Manager(extra=["--listen-addr", f"127.0.0.1:{base}"])
    refused(
        second,
        f"cannot listen on 127.0.0.1:{base + 1} for joining nodes",
        "address already in use",
    )
    still_serving(manager)


def test_a_second_manager_on_the_same_control_addr_exits(first: tuple[Manager, int, str]) -> None:
    manager, _, control = first
    second = Manager(extra=["--control-addr", control])
    refused(second, f"cannot listen on --control-addr {control}: address already in use")
    still_serving(manager)
