"""``python -m benchmark campaign``: plan, states, estimates, order, refusals and the deadline-bound runner.

Bundles are real ones written with ``write_bundle`` (records with the stage times a GOWT1 ci run logs); the
runner is tested against fake children (``python -c`` scripts that exit 0/75/1 or outlive the deadline);
one slow test runs a real campaign end to end.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmark import campaign, shipped
from benchmark.bundles import BUNDLE_FORMAT, bundle_path, write_bundle
from benchmark.cli import main
from benchmark.sweep_plan import sweep_run_tags
from benchmark.sweep_spec import SWEEPS_DIR, load_spec
from benchmark.versions import STAGE_VERSIONS, protocol_version
from generators import fit_cache

DATASET = "Fluo-N2DH-GOWT1"
ROOT = Path(__file__).resolve().parents[1]
#: stage times (s) of a ci run of ``real`` and ``mitogen`` on 2 CPU cores (the order of magnitude a run logs)
REAL_TIMES = {"window": 4.0, "fit": 0.1, "generate": 6.0, "floor": 40.0, "realism": 30.0, "train-segmenter": 120.0,
              "train-tracker": 25.0, "eval-real": 15.0}


def record(generator: str, seed: int, times: dict[str, float], versions: dict[str, int] | None = None,
           tracker: str = "learned", grid: str | None = None, profile: str = "ci") -> dict[str, Any]:
    """A bundle record as ``export_run`` writes it (the fields the campaign and the report read)."""
    stages = {name: {"run_name": name, "tags": {"stage": name, "cached": "false"}, "params": {},
                     "metrics": {f"time_{name}_s": seconds}} for name, seconds in times.items()}
    return {"bundle_format": BUNDLE_FORMAT, "dataset": DATASET, "profile": profile, "generator": generator, "seed": seed,
            "tracker": tracker, "grid_point": grid, "config": {"seed": seed},
            "stage_versions": versions or {k: STAGE_VERSIONS[k] for k in times}, "protocol_version": protocol_version(),
            "parent": {"tags": {"profile": profile, "generator": generator},
                       "metrics": {f"time_{k}_s": v for k, v in times.items()}}, "stages": stages}


def put_bundle(results: Path, generator: str, seed: int, times: dict[str, float] = REAL_TIMES, **kwargs: Any) -> Path:
    target = results / bundle_path(DATASET, kwargs.get("profile", "ci"), generator, seed)
    return write_bundle(target, record(generator, seed, times, **kwargs), {}).folder


def write_spec(folder: Path, generators: list[str], seeds: list[int], name: str = "camp", extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nprofile = "ci"\ngenerators = {json.dumps(generators)}\n'
                    f'seeds = {json.dumps(seeds)}\ndatasets = ["{DATASET}"]\n{extra}')
    return path


@pytest.fixture
def env(tmp_path: Path, shared_assets: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private cache (windows, no fits) and the real data root; results and out under tmp."""
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SYNTHVID_DATA_ROOT", str(shared_assets))
    monkeypatch.delenv(campaign.RESUME_ROOT_ENV, raising=False)
    return {"results": tmp_path / "results", "out": tmp_path / "runs", "data": shared_assets}


def bvdm_resume(spec_path: Path, results: Path, data: Path) -> Path:
    """The resume folder the campaign looks for of the spec's bvdm items (under ``<results>/_resume``)."""
    spec = load_spec(spec_path)
    with campaign.resume_root(results):
        params, seq = fit_cache.profile_fit_inputs(spec.profile, DATASET, "bvdm", {}, str(data))
        return fit_cache.resume_folder("bvdm", params, seq)


# ------------------------------------------------------------------------------------------- plan
def test_bundle_paths_are_the_ones_export_writes() -> None:
    """The grid point part is what ``export_run`` makes of the ``grid_point`` tag the campaign sets; the
    profile label is the run's ``profile`` tag; the default tracker adds no level."""
    spec = load_spec(SWEEPS_DIR / "table2.toml")
    items = campaign.plan_items(spec)
    assert len(items) == 8 and all(i.tracker == "learned" and i.label == "bvdm" for i in items)
    first = items[0]
    tags = sweep_run_tags(spec.name, spec.digest, first.task_id, first.point)
    as_export = ",".join(f"{k}={v}" for k, v in json.loads(tags["grid_point"]).items())  # bundle_cli.export_run
    assert first.relative == bundle_path(DATASET, "cpu", "bvdm", 0, "learned", as_export)
    assert first.name == f"{DATASET}/cpu/bvdm/0/sampling.t_first=100_sampling.t_next=10"
    assert [i.config.profile for i in items] == ["cpu"] * 8


def test_states_estimates_and_status(env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    results = env["results"]
    spec_path = write_spec(tmp_path, ["real", "mitogen", "bvdm"], [0, 1])
    put_bundle(results, "real", 0, REAL_TIMES)
    put_bundle(results, "real", 1, {**REAL_TIMES, "floor": 60.0}, versions={**{k: STAGE_VERSIONS[k] for k in REAL_TIMES},
                                                                              "realism": STAGE_VERSIONS["realism"] + 1})
    put_bundle(results, "mitogen", 1, {**REAL_TIMES, "fit": 50.0, "generate": 20.0})
    tampered = put_bundle(results, "mitogen", 0, REAL_TIMES) / "run.json"
    tampered.write_text(tampered.read_text().replace('"seed": 0', '"seed": 7'))
    resume = bvdm_resume(spec_path, results, env["data"])
    assert resume.parent == results.resolve() / "_resume" and resume.name.startswith("bvdm-")
    (resume / "ddpm").mkdir(parents=True)
    (resume / "ddpm" / "SHA256SUMS").write_text("")  # signed checkpoints: not a bundle for import/report
    assert all(not e.name.startswith("_resume") for e in shipped.entries("bundle", results))
    monkeypatch.setattr(fit_cache, "resume_progress", lambda folder: {"ddpm": (30, 40), "flow": None})

    assessment = campaign.assess(load_spec(spec_path), results, str(env["data"]))
    by_name = {s.item.name: s for s in assessment.states}
    state = {name.split("/", 2)[2]: s.state for name, s in by_name.items()}
    assert state == {"real/0": "done", "real/1": "stale", "mitogen/0": "broken", "mitogen/1": "done",
                     "bvdm/0": "in progress", "bvdm/1": "in progress"}
    stale = by_name[f"{DATASET}/ci/real/1"]
    assert "realism v2 (current v1)" in stale.reason
    # the median of real's two bundles, stage by stage (the stale one counts: its times are real records)
    assert stale.estimate_s == pytest.approx(sum(REAL_TIMES.values()) + 10.0)
    assert "sha256" in by_name[f"{DATASET}/ci/mitogen/0"].reason
    assert by_name[f"{DATASET}/ci/bvdm/0"].estimate_s is None  # no bvdm record: unknown, not guessed

    assert main(["campaign", str(spec_path), "--status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(DATASET)}
    assert lines[f"{DATASET}/ci/bvdm/0"].split()[1:] == ["in", "progress", "unknown", "ddpm", "30/40,", "flow", "-"]
    assert "stale" in lines[f"{DATASET}/ci/real/1"] and f"{sum(REAL_TIMES.values()) / 60 + 10 / 60:.1f}" in lines[
        f"{DATASET}/ci/real/1"]
    assert lines[f"{DATASET}/ci/real/0"].split()[1:3] == ["done", "0.0"]
    assert "totals: 2 done, 1 stale, 1 broken, 2 in progress, 0 missing" in out
    assert f"estimate: {(sum(REAL_TIMES.values()) + 10.0) / 60:.1f} min left for 1 item(s), 2 unknown" in out

    # a broken bundle: the campaign refuses to start, naming it, and runs nothing
    monkeypatch.setattr(campaign, "item_command", lambda *a: pytest.fail("a child was started"))
    assert main(["campaign", str(spec_path), "--budget", "30", "--results", str(results), "--out", str(env["out"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{DATASET}/ci/mitogen/0: broken result bundle" in err[0] and "sha256" in err[0]


def test_fit_estimate_from_card_and_resume_progress(env: dict[str, Path], tmp_path: Path) -> None:
    """A resumable fit left: the card's full wall time times the fraction its checkpoints have left; a
    generator-independent stage the generator's own bundles lack: the median over the other generators."""
    spec = load_spec(write_spec(tmp_path, ["bvdm"], [0]))
    item = campaign.plan_items(spec)[0]
    fit = campaign.FitFacts(needs_fit=True, resume=tmp_path, available=False, resumable=True, wall_s=600.0)
    state = campaign.ItemState(item, "in progress", fit=fit, progress={"ddpm": (30, 40), "flow": None})
    own = {k: v for k, v in REAL_TIMES.items() if k != "floor"} | {"generate": 300.0, "fit": 5000.0}
    times = {(DATASET, "ci", "bvdm"): [own], (DATASET, "ci", "real"): [REAL_TIMES],
             (DATASET, "ci", "mitogen"): [{"floor": 80.0}]}
    expected = 600.0 * (1 - (0.75 + 0.0) / 2) + sum(v for k, v in own.items() if k != "fit") + 60.0  # floor median
    assert campaign.estimate_seconds(state, times) == pytest.approx(expected)
    shipped = campaign.ItemState(item, "missing", fit=campaign.FitFacts(needs_fit=True, available=True))
    assert campaign.estimate_seconds(shipped, times) == pytest.approx(expected - 600.0 * 0.625)
    assert campaign.estimate_seconds(state, {(DATASET, "ci", "real"): [REAL_TIMES]}) is None


def test_order_whole_rows_in_progress_first_then_shortest(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, ["real", "mitogen", "cellcyclegan", "bvdm"], [1, 0]))
    items = {(i.config.generator, i.config.seed): i for i in campaign.plan_items(spec)}

    def state(generator: str, seed: int, name: str, minutes: float | None) -> campaign.ItemState:
        return campaign.ItemState(items[generator, seed], name, estimate_s=None if minutes is None else minutes * 60)

    states = [state("real", 1, "missing", 5), state("real", 0, "missing", 5),
              state("mitogen", 1, "missing", None), state("mitogen", 0, "done", 0),
              state("cellcyclegan", 1, "stale", 3), state("cellcyclegan", 0, "missing", 1),
              state("bvdm", 1, "missing", 100), state("bvdm", 0, "in progress", 200)]
    order = [(s.item.config.generator, s.item.config.seed) for s in campaign.campaign_order(states)]
    assert order == [("bvdm", 0), ("bvdm", 1), ("cellcyclegan", 0), ("cellcyclegan", 1), ("real", 0), ("real", 1),
                     ("mitogen", 1)]


# ------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(("budget", "message"), [("abc", "not a number of minutes"), ("3", "reserve"),
                                                 ("nan", "reserve"), ("-1", "reserve")])
def test_budget_refusals(budget: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = write_spec(tmp_path, ["real"], [0])
    assert main(["campaign", str(spec_path), "--budget", budget, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --budget {budget}") and message in err[0]


def test_results_overlapping_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = write_spec(tmp_path, ["real"], [0])
    for results, out in ((tmp_path / "runs" / "results", tmp_path / "runs"), (tmp_path / "x", tmp_path / "x")):
        assert main(["campaign", str(spec_path), "--budget", "30", "--results", str(results), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "overlap" in err[0] and str(results) in err[0]


# ------------------------------------------------------------------------------------------- the runner
def fake_children(monkeypatch: pytest.MonkeyPatch, scripts: dict[tuple[str, int], str], calls: list) -> None:
    """Each item's child runs ``scripts[(generator, seed)]`` (``python -c``) instead of the real ``run``."""
    def command(item: campaign.Item, *_args: Any) -> list[str]:
        calls.append((item.config.generator, item.config.seed))
        return [sys.executable, "-c", scripts[item.config.generator, item.config.seed]]

    monkeypatch.setattr(campaign, "item_command", command)


def fake_export(monkeypatch: pytest.MonkeyPatch, exported: list) -> None:
    """Export writes a real bundle at the item's path (no MLflow run behind it)."""
    def export(item: campaign.Item, spec: Any, results: Path, started: float, replace: bool) -> Path:
        exported.append((item.name, replace))
        target = results / item.relative
        return write_bundle(target, record(item.config.generator, item.config.seed, REAL_TIMES), {},
                            overwrite=replace).folder

    monkeypatch.setattr(campaign, "export_item", export)


def test_runner_exports_goes_on_after_a_failure_and_stops_at_exit_75(
        env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    results = env["results"]
    spec_path = write_spec(tmp_path, ["real", "mitogen", "bvdm"], [0, 1])
    put_bundle(results, "real", 1, REAL_TIMES, versions={**{k: STAGE_VERSIONS[k] for k in REAL_TIMES},
                                                          "floor": STAGE_VERSIONS["floor"] + 1})  # stale
    resume = bvdm_resume(spec_path, results, env["data"])
    resume.mkdir(parents=True)
    monkeypatch.setattr(fit_cache, "resume_progress", lambda folder: {"ddpm": None, "flow": None})
    calls: list = []
    check_env = (f"import os,sys; sys.exit(0 if os.environ['{campaign.RESUME_ROOT_ENV}'] == "
                 f"{str(results.resolve() / '_resume')!r} and int(os.environ['{campaign.DEADLINE_ENV}']) > 0 else 9)")
    scripts = {("bvdm", 0): check_env, ("bvdm", 1): "import sys; sys.exit(75)",
               ("real", 0): "import sys; sys.exit(0)", ("real", 1): "import sys; sys.exit(0)",
               ("mitogen", 0): "import sys; sys.exit(1)", ("mitogen", 1): "import sys; sys.exit(0)"}
    fake_children(monkeypatch, scripts, calls)
    exported: list = []
    fake_export(monkeypatch, exported)
    caplog.set_level(logging.INFO, logger="benchmark.campaign")
    code = main(["campaign", str(spec_path), "--budget", "30", "--results", str(results), "--out", str(env["out"])])
    # bvdm's row first (in progress): seed 0 exports and removes the resume folder, seed 1 stops at the
    # deadline (exit 75): the campaign stops there
    assert calls == [("bvdm", 0), ("bvdm", 1)]
    assert exported == [(f"{DATASET}/ci/bvdm/0", False)] and not resume.exists()
    assert code == 0  # bvdm/1 stopped at the deadline (exit 75): the campaign stopped there, nothing failed
    out = capsys.readouterr().out
    assert "campaign camp: 6 to run, 1 run now, 0 failed" in out and "stopped at the deadline" in out
    calls.clear()
    exported.clear()
    scripts[("bvdm", 1)] = "import sys; sys.exit(0)"
    # now bvdm has a record (its seed 0): its row is the shortest; real (known) next; mitogen (unknown) last:
    # its seed 0 fails and the rest of its row is left
    code = main(["campaign", str(spec_path), "--budget", "30", "--results", str(results), "--out", str(env["out"])])
    assert calls == [("bvdm", 1), ("real", 0), ("real", 1), ("mitogen", 0)] and code == 1
    assert exported == [(f"{DATASET}/ci/bvdm/1", False), (f"{DATASET}/ci/real/0", False),
                        (f"{DATASET}/ci/real/1", True)]  # the stale one replaced
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failed and all(f"failed {DATASET}/ci/mitogen/0: exit status 1" in line for line in failed)
    assert "failed: Fluo-N2DH-GOWT1/ci/mitogen/0" in capsys.readouterr().out


def test_skip_rule_estimate_over_the_time_left(env: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An item whose recorded estimate exceeds the time left is skipped; one without an estimate runs."""
    results = env["results"]
    spec_path = write_spec(tmp_path, ["real", "mitogen"], [0, 1])
    put_bundle(results, "real", 0, {**REAL_TIMES, "train-segmenter": 3600.0})  # an hour: over a 10-min budget
    calls: list = []
    fake_children(monkeypatch, dict.fromkeys([("real", 1), ("mitogen", 0), ("mitogen", 1)], "import sys; sys.exit(1)"),
                  calls)
    outcome = campaign.run_campaign(load_spec(spec_path), 10.0, results, env["out"], str(env["data"]))
    assert outcome.skipped == [f"{DATASET}/ci/real/1"] and calls == [("mitogen", 0)]


def test_a_child_running_past_the_deadline_gets_sigterm_in_time(env: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    results = env["results"]
    spec_path = write_spec(tmp_path, ["real"], [0, 1])
    monkeypatch.setattr(campaign, "RESERVE_S", 1.0)
    monkeypatch.setattr(campaign, "TERM_DELAY_S", 0.5)
    monkeypatch.setattr(campaign, "KILL_AFTER_S", 5.0)
    marker = tmp_path / "sigterm"
    sleeper = ("import signal, sys, time, pathlib\n"
               f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(marker)!r}).write_text(repr(time.time())),"
               " sys.exit(143)))\ntime.sleep(120)")
    calls: list = []
    fake_children(monkeypatch, {("real", 0): sleeper, ("real", 1): "import sys; sys.exit(0)"}, calls)
    spec = load_spec(spec_path)
    campaign.plan_items(spec)  # the plan's imports out of the timing
    start = time.time()
    outcome = campaign.run_campaign(spec, 5.0 / 60, results, env["out"], str(env["data"]))  # deadline: start + 4 s
    assert outcome.stopped and calls == [("real", 0)] and not outcome.failed
    term = float(marker.read_text())
    assert start + 4.0 <= term <= start + 4.0 + 0.5 + 3.0  # at the deadline + TERM_DELAY_S (slack for a busy CPU)
    assert time.time() - start < 15


def test_sigkill_after_the_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(campaign, "TERM_DELAY_S", 0.0)
    monkeypatch.setattr(campaign, "KILL_AFTER_S", 1.0)
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    start = time.time()
    code, stopped = campaign.run_child([sys.executable, "-c", stubborn], dict(os.environ), start + 3.0,
                                       tmp_path / "log")
    assert stopped and code == -9 and time.time() - start < 12


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_campaign_end_to_end_real_on_ci(shared_assets: Path, tmp_path: Path) -> None:
    """A real campaign (generator real, ci profile: a window of GOWT1) writes its bundle; the same campaign
    again has nothing to run; ``--status`` says done."""
    spec_path = write_spec(tmp_path, ["real"], [0], name="e2e")
    results, out = tmp_path / "results", tmp_path / "runs"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "SYNTHVID_DATA_ROOT": str(shared_assets)}
    env.pop(campaign.RESUME_ROOT_ENV, None)
    env.pop(campaign.DEADLINE_ENV, None)
    command = [sys.executable, "-m", "benchmark", "campaign", str(spec_path), "--results", str(results)]
    first = subprocess.run([*command, "--budget", "20", "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=25 * 60)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "campaign e2e: 1 to run, 1 run now, 0 failed" in first.stdout
    folder = results / DATASET / "ci" / "real" / "0"
    assert (folder / "SHA256SUMS").is_file() and json.loads((folder / "run.json").read_text())["generator"] == "real"
    second = subprocess.run([*command, "--budget", "20", "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=5 * 60)
    assert second.returncode == 0 and "campaign e2e: 0 to run, 0 run now" in second.stdout, second.stderr[-3000:]
    status = subprocess.run([*command, "--status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=5 * 60)
    assert status.returncode == 0
    assert f"{DATASET}/ci/real/0" in status.stdout and "totals: 1 done, 0 stale, 0 broken" in status.stdout


def test_status_of_the_low_data_spec_plans_fits_without_its_downstream_keys(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``table3-mixed.toml`` sweeps ``downstream.real_frames`` over fitted generators: the fit facts see only the
    generator's overrides (the ``[downstream]`` key once reached ``MitoGenConfig`` and every status failed)."""
    spec = ROOT / "benchmark" / "sweeps" / "table3-mixed.toml"
    assert main(["campaign", str(spec), "--status", "--results", str(env["results"])]) == 0
    out = capsys.readouterr().out
    assert "Fluo-N2DH-GOWT1/lowdata/mitogen/0/real-2+synthetic" in out and "0 done" in out and "36 missing" in out
