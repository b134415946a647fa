"""The manager's choice of memory allocator: when it restarts itself on jemalloc, with
what environment, and how the restarted process puts the environment back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from manager.daemon import memalloc
from manager.daemon.memalloc import AllocatorError, find_jemalloc, preload_env, restore_env

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_auto_preloads_jemalloc_with_the_compact_configuration() -> None:
    env = preload_env({"PATH": "/bin"}, LIB)
    assert env is not None
    assert env["LD_PRELOAD"] == LIB
    assert env["MALLOC_CONF"] == memalloc.MALLOC_CONF
    assert env["PATH"] == "/bin"
    assert json.loads(env[memalloc.RESTORE_VARIABLE]) == {"LD_PRELOAD": None, "MALLOC_CONF": None}


def test_the_operators_preloads_and_configuration_are_kept() -> None:
    env = preload_env({"LD_PRELOAD": "/opt/libtrace.so", "MALLOC_CONF": "narenas:2"}, LIB)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIB} /opt/libtrace.so"
    assert env["MALLOC_CONF"] == "narenas:2"


@pytest.mark.parametrize(
    "environ",
    [
        {"SWARMLET_MALLOC": "system"},
        {"SWARMLET_MALLOC": " System "},
        {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},  # preloaded by the operator
        {memalloc.RESTORE_VARIABLE: "{}"},  # the restarted process: never again
    ],
)
def test_no_restart(environ: dict[str, str]) -> None:
    assert preload_env(environ, LIB) is None


def test_without_jemalloc_auto_goes_on_and_jemalloc_refuses() -> None:
    assert preload_env({}, None) is None
    assert preload_env({"SWARMLET_MALLOC": "auto"}, None) is None
    with pytest.raises(AllocatorError, match="apt-get install libjemalloc2"):
        preload_env({"SWARMLET_MALLOC": "jemalloc"}, None)


def test_an_unknown_choice_is_refused_with_the_choices() -> None:
    expected = "'tcmalloc' is not an allocator: use auto, jemalloc, system"
    with pytest.raises(AllocatorError, match=expected):
        preload_env({"SWARMLET_MALLOC": "tcmalloc"}, LIB)


@pytest.mark.parametrize(
    "before",
    [{}, {"LD_PRELOAD": "/opt/libtrace.so"}, {"MALLOC_CONF": "narenas:2", "HOME": "/root"}],
)
def test_restore_gives_back_the_environment_as_it_was(before: dict[str, str]) -> None:
    env = preload_env(before, LIB)
    assert env is not None
    restore_env(env)
    assert env == before


def test_restore_leaves_an_environment_it_did_not_change() -> None:
    env = {"LD_PRELOAD": "/opt/libtrace.so"}
    restore_env(env)
    assert env == {"LD_PRELOAD": "/opt/libtrace.so"}


def test_find_jemalloc_looks_in_the_library_dirs(tmp_path: Path) -> None:
    assert find_jemalloc([str(tmp_path)]) is None
    (tmp_path / memalloc.LIBRARY).write_bytes(b"")
    assert find_jemalloc(["/nonexistent", str(tmp_path)]) == str(tmp_path / memalloc.LIBRARY)


@pytest.mark.skipif("libjemalloc" in os.environ.get("LD_PRELOAD", ""), reason="run on jemalloc")
def test_this_test_process_runs_on_the_system_allocator() -> None:
    assert memalloc.in_use() == "system"
