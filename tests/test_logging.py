"""Progress goes through ``logging`` to stderr (``-v``/``-q`` before the subcommand); a command's result stays
on stdout; no library module prints chatter."""

from __future__ import annotations

import argparse
import ast
import logging
import os
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.cli import main
from benchmark.logs import MLFLOW_LEVEL_ENV
from benchmark.stages import Stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "generators", "downstream", "reports")
RESULT = "the-result-line"

#: (module, function) whose ``print`` IS the command's output: a table, a JSON line, a summary, a verdict, or
#: the CLI's one-line ``error:`` form. Everything else logs.
PRINTS_ITS_RESULT = {
    ("benchmark.cli", "_data_info"), ("benchmark.cli", "_data_fetch"), ("benchmark.cli", "_data_list"),
    ("benchmark.cli", "_data_intensity_map"),  # the derived map and whether it is the frozen one
    ("benchmark.cli", "_dispatch"),  # error: ... (its exact form is asserted by tests/test_hostile.py)
    ("benchmark.assets", "_cmd_fetch"), ("benchmark.assets", "_cmd_list"),
    ("benchmark.metrics.cli", "_cmd_seg_tra"), ("benchmark.metrics.cli", "_cmd_realism"),
    ("benchmark.metrics.cli", "_cmd_texture_carry"),
    ("benchmark.gate", "_check_command"), ("benchmark.sweep", "_sweep_command"),
    ("benchmark.pipeline", "_run_command"), ("benchmark.pipeline", "_oracle_command"),
    ("generators.cli", "run_generate"), ("generators.cellcyclegan.training_report", "main"),
    ("reports.cli", "_report_command"),
    ("benchmark.bundle_cli", "_export_command"), ("benchmark.bundle_cli", "_import_command"),
    ("benchmark.campaign", "_campaign_command"),  # the --status table and the final summary
}


def _toy_command(stages_root: Path) -> object:
    """Stands in for ``data list``: prints a result and logs like a ``run`` (a stage computed, then cached),
    plus one DEBUG line of the harness and one INFO line of a third-party library."""

    def command(args: argparse.Namespace) -> int:
        stages = Stages(stages_root, "ds")
        folder = stages.folder("toy", "key")
        stages._compute("toy", "key", folder, lambda out: {"value": 1.0})
        stages._cached("toy", folder)
        logging.getLogger("benchmark.toy").debug("a detail only -v shows")
        logging.getLogger("matplotlib").info("third-party chatter")
        print(RESULT)
        return 0

    return command


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_data_list", _toy_command(tmp_path / "stages"))


def _run(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[str, str]:
    assert main([*flags, "data", "list"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_default_shows_the_stage_lines_on_stderr_as_plain_lines(toy: None, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _run(capsys)
    assert out == f"{RESULT}\n"  # the result alone on stdout
    lines = err.splitlines()
    assert lines[0].startswith("[toy] running -> ") and lines[1].startswith("[toy] done in ")
    assert lines[2].startswith("[toy] cached: ") and len(lines) == 3  # no DEBUG, no third-party INFO


def test_quiet_silences_progress_but_not_the_result(toy: None, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _run(capsys, "-q")
    assert out == f"{RESULT}\n" and err == ""


def test_verbose_shows_debug_with_level_and_logger(toy: None, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _run(capsys, "--verbose")
    assert out == f"{RESULT}\n"
    assert "INFO benchmark.stages: [toy] running -> " in err
    assert "DEBUG benchmark.toy: a detail only -v shows" in err
    assert "INFO matplotlib: third-party chatter" in err


def test_v_and_q_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["-v", "-q", "data", "list"])
    assert capsys.readouterr().err.startswith("error: ")


def test_main_leaves_logging_as_it_found_it(toy: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Tests call ``main`` many times in one process: no handler may pile up, no level stay behind."""
    names = ("", "benchmark", "reports", "mlflow", "matplotlib")
    before = ([*logging.getLogger().handlers], {n: logging.getLogger(n).level for n in names},
              os.environ.get(MLFLOW_LEVEL_ENV))
    for flags in ((), ("-q",), ("-v",), ()):
        _run(capsys, *flags)
    after = ([*logging.getLogger().handlers], {n: logging.getLogger(n).level for n in names},
             os.environ.get(MLFLOW_LEVEL_ENV))
    assert after == before
    assert len(_run(capsys)[1].splitlines()) == 3  # still one line per message, not one per earlier call


def test_a_refused_command_is_still_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "run", "--generator", "real", "--param", "[1, 2]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def _print_calls(path: Path) -> list[tuple[str, str]]:
    """(module, enclosing function) of each use of ``print`` in ``path``, a call or a bare reference."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Name) and node.id == "print":
            found.append((module, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), "<module>")
    return found


def test_only_result_outputs_print() -> None:
    found = {use for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for use in _print_calls(path)}
    assert found - PRINTS_ITS_RESULT == set(), "progress belongs in logging.getLogger(__name__), not print"
    assert PRINTS_ITS_RESULT - found == set(), "stale entries: drop them from PRINTS_ITS_RESULT"
