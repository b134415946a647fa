"""Generate the Python modules of protos/*.proto into common/api/.

`make protos` runs it; `make protos-check` runs it into a scratch dir and fails if
the committed modules differ (they are committed so that installing swarmlet needs no
protoc). protoc writes absolute imports (`import objects_pb2`); they are rewritten to
relative ones so the modules live inside the `common.api` package, as aetcd does.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
DEFAULT_OUT = PROTOS.parent / "common" / "api"
IMPORT = re.compile(r"^import (\w+_pb2)( as \w+)?$", re.MULTILINE)
FROM_IMPORT = re.compile(r"^from (\w+_pb2|\w+_pb2_grpc) import", re.MULTILINE)
HEADER = '"""Generated from protos/ by protos/generate.py (make protos). Do not edit."""\n'


def generate(out: Path) -> None:
    sources = sorted(p.name for p in PROTOS.glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    bin_dir = Path(sys.executable).parent
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--mypy_out=quiet:{out}",
            f"--mypy_grpc_out=quiet:{out}",
            *sources,
        ],
        check=True,
        cwd=PROTOS,
    )
    for path in sorted(out.glob("*_pb2*.py*")):
        text = path.read_text()
        text = IMPORT.sub(r"from . import \1\2", text)
        text = FROM_IMPORT.sub(r"from .\1 import", text)
        path.write_text(text)
    (out / "__init__.py").write_text(HEADER)


def check(out: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "api"
        generate(fresh)
        names = {p.name for p in fresh.iterdir()} | {
            p.name for p in out.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}
        }
        stale = [
            n
            for n in sorted(names)
            if not (out / n).exists()
            or not (fresh / n).exists()
            or not filecmp.cmp(out / n, fresh / n, shallow=False)
        ]
    if stale:
        print("stale generated modules in common/api/: " + ", ".join(stale), file=sys.stderr)
        print("run `make protos` and commit the result", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if common/api/ is stale")
    args = parser.parse_args()
    if args.check:
        return check(DEFAULT_OUT)
    if DEFAULT_OUT.exists():
        shutil.rmtree(DEFAULT_OUT)
    generate(DEFAULT_OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
