"""``python -m benchmark --help`` starts fast: no MLflow, torch or TensorFlow is imported to print help.

Checked by the modules the interpreter reports with ``-X importtime`` rather than by a timing, which
would depend on the machine's load.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.imports import is_heavy

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(*args: str) -> tuple[set[str], str]:
    """Modules ``python -X importtime -m benchmark *args`` imports, and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "benchmark", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    return names, done.stdout


@pytest.mark.parametrize("args", [("--help",), ("check", "--help"), ("run", "--help")])
def test_help_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    names, stdout = imported_modules(*args)
    assert "usage: python -m benchmark" in stdout
    assert "benchmark.cli" in names  # the parser really was built (the import list is not empty)
    heavy = sorted(n for n in names if is_heavy(n))
    assert not heavy, f"`python -m benchmark {' '.join(args)}` imports {heavy[:10]}"


def test_every_subcommand_is_still_registered() -> None:
    _, stdout = imported_modules("--help")
    commands = stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert {"data", "run", "oracle", "report", "sweep", "check", "metrics", "generate"} <= set(commands)
