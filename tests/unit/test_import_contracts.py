"""The layering of the code base (pyproject.toml's [tool.importlinter] contracts): the
agent and swarmctl never import the manager, the domain package imports nothing of the
manager, the reconcilers and the control API do not import each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_domain_package_loads_no_other_part_of_the_manager() -> None:
    """At run time too (lint-imports reads the source): importing every rule module
    of manager.domain brings in no store, reconciler or gRPC servicer."""
    domain = sorted(p.stem for p in (ROOT / "manager" / "domain").glob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for name in {domain!r}:\n"
        "    importlib.import_module('manager.domain.' + name if name != '__init__' "
        "else 'manager.domain')\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'manager')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert {"manager.domain.constraints", "manager.domain.placer"} <= loaded
    assert {m for m in loaded if m != "manager" and not m.startswith("manager.domain")} == set()
