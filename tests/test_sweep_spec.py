"""Sweep specs: the shipped examples load and expand along the stage DAG; a bad spec is refused with one line
naming the file (exit 2) before any task runs, any run is logged or anything is written under --out."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hostile import one_error_line, run_cli

from benchmark.config import build_run_config
from benchmark.stages import FIT
from benchmark.sweep_plan import plan_sweep
from benchmark.sweep_spec import SWEEPS_DIR, grid_points, load_spec
from generators.fit_cache import fit_config
from generators.registry import get_generator

GOOD = """
profile = "ci"
generators = ["mitogen"]
seeds = [0, 1]
datasets = ["Fluo-N2DH-GOWT1"]
"""


def test_ci_seeds_shares_one_fit_per_generator_and_one_floor() -> None:
    spec = load_spec(SWEEPS_DIR / "ci-seeds.toml")
    tasks = plan_sweep(spec)
    kinds = [t.kind for t in tasks]
    assert kinds == ["floor"] + ["fit"] * 3 + ["run"] * 8  # `real` fits nothing; every task after its needs
    ids = [t.id for t in tasks]
    for task in tasks:
        assert all(ids.index(need) < ids.index(task.id) for need in task.needs)
    fits = {t.config.generator: t.id for t in tasks if t.kind == "fit"}
    for run in (t for t in tasks if t.kind == "run"):  # the floor is started first, but no run waits for it
        assert run.needs == ((fits[run.config.generator],) if run.config.generator in fits else ())
    assert {(t.config.generator, t.config.seed) for t in tasks if t.kind == "run"} == {
        (g, s) for g in ("real", "mitogen", "cellcyclegan", "bvdm") for s in (0, 1)}
    # a GPU when one exists for the fits that train networks, never for the run tasks on this profile
    assert {t.config.generator: t.resources.gpu for t in tasks if t.kind == "fit"} == {
        "mitogen": "none", "cellcyclegan": "if-available", "bvdm": "if-available"}
    assert {t.resources.gpu for t in tasks if t.kind == "run"} == {"none"}


def test_table2_spec_is_one_fit_for_eight_sampling_points() -> None:
    spec = load_spec(SWEEPS_DIR / "table2.toml")
    tasks = plan_sweep(spec)
    assert [t.kind for t in tasks] == ["floor", "fit"] + ["run"] * 8  # (200, 10) lies on both lines: once
    fit = tasks[1]
    assert all(t.needs == (fit.id,) for t in tasks[2:])
    # what the shared fit stands for: every point's resolved fit config is the same (sampling fields only vary)
    cls = get_generator("bvdm")
    configs = {str(fit_config(cls, build_run_config(spec.profile, "Fluo-N2DH-GOWT1", "bvdm", 0, p).generator_params))
               for p in spec.grid}
    assert len(configs) == 1
    assert spec.name == "table2" and spec.profile == "cpu"


def test_a_report_kind_is_found_by_name_through_its_entry_point(tmp_path: Path) -> None:
    """The sweep prints the report its spec names (``report = "table2"``), found in the ``synthvid.reports``
    entry-point group: the orchestration never imports the reports layer by a spec's name."""
    from benchmark.sweep_spec import report_kinds

    assert load_spec(SWEEPS_DIR / "table2.toml").report == "table2"
    assert report_kinds()["table2"].value == "reports.sweep:table2_report"
    assert load_spec(SWEEPS_DIR / "ci-seeds.toml").report is None
    renamed = tmp_path / "ablation.toml"  # the report follows the key, not the spec's name
    renamed.write_text((SWEEPS_DIR / "table2.toml").read_text().replace('name = "table2"', 'name = "ablation"'))
    assert load_spec(renamed).report == "table2"


def test_grid_is_a_product_and_grids_a_union(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    assert grid_points(path, {"a": [1, 2], "b": ["x"]}) == ({"a": 1, "b": "x"}, {"a": 2, "b": "x"})
    assert grid_points(path, [{"a": [1, 2]}, {"a": [2, 3]}]) == ({"a": 1}, {"a": 2}, {"a": 3})
    assert grid_points(path, None) == ({},)


def test_the_same_spec_is_the_same_sweep(tmp_path: Path) -> None:
    """Comments and location do not change the digest that names the sweep's records and parent run."""
    a, b = tmp_path / "a" / "s.toml", tmp_path / "b" / "s.toml"
    for path, text in ((a, GOOD), (b, "# a comment\n" + GOOD)):
        path.parent.mkdir()
        path.write_text(text)
    assert load_spec(a).digest == load_spec(b).digest
    b.write_text(GOOD.replace("[0, 1]", "[0, 2]"))
    assert load_spec(a).digest != load_spec(b).digest


@pytest.mark.parametrize(("text", "needles"), [
    (GOOD + 'colour = "red"\n', ["unknown key 'colour'", "known: name"]),
    (GOOD.replace('profile = "ci"\n', ""), ["missing key 'profile'"]),
    (GOOD.replace('"mitogen"', '"mitogne"'), ["unknown generator 'mitogne'", "bvdm"]),
    (GOOD.replace('"Fluo-N2DH-GOWT1"', '"Fluo-N2DH-GOWT2"'), ["unknown dataset 'Fluo-N2DH-GOWT2'"]),
    (GOOD.replace('"ci"', '"cpu-fast"'), ["profile: unknown profile 'cpu-fast'"]),
    (GOOD.replace('"ci"', '"base"'), ["profile: profile 'base' is only a base"]),
    (GOOD.replace("[0, 1]", "[0, -1]"), ["seeds must be integers", "-1"]),
    (GOOD.replace("[0, 1]", "[0, 2147483648]"), ["seeds must be integers", "2147483648"]),
    (GOOD.replace("[0, 1]", '["0"]'), ["seeds must be integers", "'0'"]),
    (GOOD.replace("[0, 1]", "[1, 1]"), ["seeds lists a seed twice"]),
    (GOOD.replace("[0, 1]", "[]"), ["seeds must be a non-empty list"]),
    (GOOD.replace('generators = ["mitogen"]', 'generators = "mitogen"'), ["generators must be a non-empty list"]),
    (GOOD + "[grid]\nmax_fit_frames = 4\n", ["grid.max_fit_frames must be a non-empty list"]),
    (GOOD + "grid = 3\n", ["grid must be a table"]),
    (GOOD + "[grid]\nt_frist = [100]\n", ["generator mitogen, grid point t_frist=100", "t_frist"]),
    (GOOD + 'name = "a b"\n', ["name 'a b' must be"]),
    ('report = "table3"\n' + GOOD, ["report 'table3' is not a report kind", "table2", "synthvid.reports"]),
    (GOOD + "[grid]\n\"downstream.real_frames\" = [1]\n", ["downstream.real_frames = 1", "needs >= 2 frames"]),
    ("profile = \n", ["invalid TOML"]),
])
def test_a_bad_spec_is_one_line_naming_the_file_before_any_work(text: str, needles: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the default MLflow store would be ./mlflow.db
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    code, out, err = run_cli(["sweep", spec, "--out", tmp_path / "out"], capsys)
    assert code == 2 and out == ""
    one_error_line(err, f"{spec}: ", *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no --out, no MLflow store


def test_a_missing_spec_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["sweep", tmp_path / "nope.toml", "--out", tmp_path / "out"], capsys)
    assert code == 2
    one_error_line(err, "nope.toml: sweep spec not found")


def test_task_resources_follow_the_stage_and_fit_the_cluster() -> None:
    """A network-training fit takes a GPU where a node has one and runs without elsewhere; a CUDA profile is
    refused on a cluster without GPUs (it would wait forever); memory hints never exceed the largest node."""
    import dataclasses

    from benchmark.cluster import task_options

    plan = plan_sweep(load_spec(SWEEPS_DIR / "ci-seeds.toml"))
    tasks = {t.id.split("-")[1] if t.kind == "fit" else t.kind: t for t in plan}
    cpu_node = {"CPU": 2.0, "memory": 8 * 2**30}
    gpu_node = {"CPU": 16.0, "GPU": 1.0, "memory": 64 * 2**30}
    task, options = task_options(tasks["bvdm"], [cpu_node], max_retries=2)
    assert options["num_gpus"] == 0 and task.num_gpus == 0 and options["memory"] == 4 * 2**30
    task, options = task_options(tasks["bvdm"], [cpu_node, gpu_node], max_retries=2)
    assert options["num_gpus"] == 1 and task.num_gpus == 1  # the task body then fits on "cuda"
    assert task_options(tasks["mitogen"], [gpu_node], max_retries=2)[1]["num_gpus"] == 0
    _, options = task_options(tasks["run"], [{"CPU": 1.0, "memory": 2 * 2**30}], max_retries=0)
    assert options["memory"] <= 0.9 * 2 * 2**30 and options["num_cpus"] == 1 and options["max_retries"] == 0
    on_cuda = dataclasses.replace(tasks["bvdm"], config=build_run_config("paper", "Fluo-N2DH-GOWT1", "bvdm"))
    on_cuda = dataclasses.replace(on_cuda, resources=FIT.resources(on_cuda.config))
    with pytest.raises(ValueError, match="puts the generator on CUDA .* has no GPU"):
        task_options(on_cuda, [cpu_node], max_retries=2)
    assert task_options(on_cuda, [gpu_node], max_retries=2)[1]["num_gpus"] == 1


def test_seed_interval_is_a_t_interval_cut_to_the_metric_range() -> None:
    from scipy import stats

    from reports.tables import seed_interval

    mean, low, high = seed_interval([0.2, 0.3, 0.4])
    half = stats.t.ppf(0.975, 2) * 0.1 / 3**0.5
    assert (mean, low, high) == pytest.approx((0.3, 0.3 - half, 0.3 + half))
    assert seed_interval([0.1, 0.9], (0.0, 1.0)) == pytest.approx((0.5, 0.0, 1.0))  # t(1) = 12.7: cut to [0, 1]
    assert seed_interval([143.3, 143.3]) == (143.3, None, None)  # shared by the seeds: no spread to show
    assert seed_interval([7.0, None, float("nan")]) == (7.0, None, None)
    assert seed_interval([]) == (None, None, None)


class _InterruptsWhileFinalised:
    """Garbage whose finaliser receives a Ctrl-C: Python runs the handler inside ``__del__``, where a raised
    ``KeyboardInterrupt`` is printed as unraisable and dropped (how a sweep's Ctrl-C got lost under the
    cyclic GC of a long test session)."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # bytecodes after the signal: the handler runs here, inside the finaliser


def test_a_ctrl_c_during_a_finaliser_still_stops_the_sweep_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Python's own handler the interrupt is lost; under the sweep's ``DeferredInterrupt`` it is
    recorded and raised at the loop's next poll, and the earlier handler is back afterwards."""
    import gc
    import signal
    import sys

    from benchmark.cluster import DeferredInterrupt

    dropped: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _InterruptsWhileFinalised()
    gc.collect()  # the KeyboardInterrupt is raised and dropped inside __del__: nothing reaches this frame
    assert dropped == [KeyboardInterrupt]
    with DeferredInterrupt() as interrupt:
        _InterruptsWhileFinalised()
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            interrupt.act()
        interrupt.act()  # acted on once only
    assert dropped == [KeyboardInterrupt]  # nothing more was dropped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt), DeferredInterrupt():
        _InterruptsWhileFinalised()
        gc.collect()  # not acted on before the block ends: acted on as it ends
