"""`python -m benchmark report` / `sweep`: Table 1, the HTML page and Table 2 from MLflow runs whose
metrics come from real scoring of real GOWT1 data (see test_reports_data.py)."""

from __future__ import annotations

import base64
import html
import io
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from PIL import Image
from test_reports_data import (
    DATASET,
    WINDOW_FRAMES,
    ScoredData,
    fresh_store,
    log_scored_run,
    prepare_scored_data,
    realism_config,
)

from benchmark import experiment
from benchmark.cli import main
from benchmark.ctc import CTCSequence
from reports.comparisons import READING_GUIDE
from reports.markdown import markdown_table
from reports.runs import latest_per_generator, parent_runs
from reports.sweep import (
    SWEEP_NAME,
    T_FIRST_PARAM,
    T_NEXT_PARAM,
    sweep_points,
    sweep_table,
    write_sweep_report,
)
from reports.tables import FLOOR_ROW, display_table, n_summary

ROOT = Path(__file__).resolve().parents[1]
VOID = {"meta", "img", "br", "hr", "link", "input"}


@pytest.fixture(scope="module")
def data(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoredData:
    return prepare_scored_data(gowt1, tmp_path_factory.getbasetemp() / "reports-data")


@pytest.fixture(scope="module")
def logged(data: ScoredData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs: an older broken 'mitogen', then real (no realism), mitogen (good), bvdm (broken), the floor."""
    from benchmark.metrics.realism import real_floor
    from reports.runs import log_floor

    root = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", fresh_store(data, root))
    stages = root / "stages"
    rows = {"mitogen-old": log_scored_run("mitogen", "ci", data.window, data.noise_synthetic, data.broken_res,
                                          stages, data.cache)}
    rows["real"] = log_scored_run("real", "ci", data.window, data.good_synthetic, data.good_res, stages, data.cache,
                                  realism=False)
    rows["mitogen"] = log_scored_run("mitogen", "ci", data.window, data.good_synthetic, data.good_res, stages,
                                     data.cache)
    rows["bvdm"] = log_scored_run("bvdm", "ci", data.window, data.noise_synthetic, data.broken_res, stages, data.cache)
    features = root / "floor-features.npz"
    floor = real_floor(CTCSequence(data.window, "01"), CTCSequence(data.window, "02"), realism_config(),
                       data.cache, features_out=features)
    rows["floor"] = {**floor, "run_id": log_floor(DATASET, floor, "ci", features=features)}
    yield {"root": root, "rows": rows}
    mp.undo()


def test_latest_run_per_generator_in_table_order(logged: dict) -> None:
    latest = latest_per_generator(parent_runs(DATASET, "ci"))
    assert list(latest["tags.generator"]) == ["real", "mitogen", "bvdm"]
    assert latest.iloc[1]["run_id"] == logged["rows"]["mitogen"]["run_id"]  # the newer of the two mitogen runs
    assert parent_runs(DATASET, "paper").empty


def test_report_tables_match_mlflow(logged: dict, capsys: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture) -> None:
    out = logged["root"] / "out"
    assert main(["report", "--dataset", DATASET, "--profile", "ci", "--out", str(out)]) == 0
    folder = out / "reports" / f"{DATASET}-ci"
    table = pd.read_csv(folder / "table1.csv")
    assert list(table["generator"]) == ["real", "mitogen", "bvdm", FLOOR_ROW]
    rows = logged["rows"]
    for name in ("real", "mitogen", "bvdm"):
        got = table[table["generator"] == name].iloc[0]
        for key in ("SEG", "DET", "TRA"):
            assert got[key] == pytest.approx(rows[name][key])
        if name != "real":
            assert got["FID"] == pytest.approx(rows[name]["fid"])
            assert (got["FID_ci_low"], got["FID_ci_high"]) == pytest.approx((rows[name]["fid_ci_low"],
                                                                              rows[name]["fid_ci_high"]))
            assert got["n_fid"] == rows[name]["n_fid"]
    assert pd.isna(table[table["generator"] == "real"].iloc[0]["FID"])
    floor = table[table["generator"] == FLOOR_ROW].iloc[0]
    assert floor["FID"] == pytest.approx(rows["floor"]["fid"]) and pd.isna(floor["SEG"])

    markdown = (folder / "table1.md").read_text()
    n_values = sorted(int(rows[name]["n_fid"]) for name in ("mitogen", "bvdm", "floor"))
    span = f"{n_values[0]}" if n_values[0] == n_values[-1] else f"{n_values[0]}–{n_values[-1]}"
    assert f"FID/KID N={span} crops per side" in markdown
    table1 = markdown.split("## Table 1b")[0]
    lines = [line for line in table1.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[1].strip() == "generator"
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["real", "mitogen", "bvdm", FLOOR_ROW]
    assert f"{rows['bvdm']['fid']:.4g} [{rows['bvdm']['fid_ci_low']:.4g}, {rows['bvdm']['fid_ci_high']:.4g}]" in markdown
    out = capsys.readouterr().out
    assert markdown in out and "wrote" not in out  # stdout: Table 1 itself; the files written are progress
    assert "wrote" in caplog.text
    # one reference and one intensity map, stated once for the floor and every row
    assert f"real held-out sequence {DATASET}/02; one intensity map 0..123" in markdown
    assert "Excluded" not in markdown

    paired = pd.read_csv(folder / "table1b_paired.csv")
    fid = paired[paired["metric"] == "FID"].set_index("comparison")
    # noise textures vs the held-out video itself: a difference far from 0 that the interval must resolve
    worse = fid.loc["mitogen − bvdm"]
    assert worse["difference"] < 0 and worse["ci_high"] < 0 and bool(worse["excludes_zero"])
    assert worse["difference"] == pytest.approx(rows["mitogen"]["fid"] - rows["bvdm"]["fid"], rel=1e-6)
    assert {"mitogen − real training sequence (floor)", "bvdm − real training sequence (floor)"} <= set(fid.index)
    assert fid.loc["bvdm − real training sequence (floor)", "ci_low"] > 0
    assert "## Table 1b — paired realism differences" in markdown and "| mitogen − bvdm |" in markdown

    reports = mlflow.search_runs(experiment_names=[experiment.experiment_name(DATASET)],
                                 filter_string="tags.stage = 'report'")
    assert len(reports) == 1
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(reports.iloc[0]["run_id"], "report")}
    assert {"report/table1.md", "report/table1.csv", "report/report.html", "report/figures"} <= names


def test_table_1c_splits_the_tra_loss_by_cause(logged: dict) -> None:
    """Each AOGM part's share of the TRA loss, from the eval stage's logged counts; the parts add up to 1 - TRA;
    random squares lose to missed cells, full GT masks lose nothing."""
    from reports.downstream import AOGM_PARTS
    from reports.report import build_report

    report = build_report(DATASET, "ci", logged["root"] / "out-1c", log=False)
    table = pd.read_csv(report.folder / "table1c_downstream.csv").set_index("generator")
    assert list(table.index) == ["real", "mitogen", "bvdm"]
    rows = logged["rows"]
    for name in table.index:
        got, logged_row = table.loc[name], rows[name]
        assert [got[f"n_{p}"] for p in AOGM_PARTS] == [logged_row[f"AOGM_{p}"] for p in AOGM_PARTS]
        assert sum(got[f"loss_{p}"] for p in AOGM_PARTS) == pytest.approx(1 - logged_row["TRA"])
        assert got["loss_detection"] + got["loss_links"] == pytest.approx(1 - logged_row["TRA"])
    assert table.loc["mitogen", "loss_detection"] == 0 and table.loc["mitogen", "loss_links"] == 0  # GT itself
    broken = table.loc["bvdm"]
    assert broken["n_FN"] > 0 and broken["loss_FN"] > 0.5 and broken["main_cause"] == "missed cells (FN)"
    markdown = report.markdown.read_text()
    assert "## Table 1c — where the downstream loses TRA" in markdown
    assert f"| {broken['loss_FN']:.3f} ({int(broken['n_FN'])}) |" in markdown


def test_a_tra_loss_below_aogm_0_splits_into_weight_times_count_over_aogm_0() -> None:
    """While AOGM < AOGM_0 each share is the TRA its error type costs: w * count / AOGM_0 (CTC weights)."""
    from reports.downstream import breakdown_row

    counts = {"FN": 5, "NS": 1, "FP": 7, "EA": 20, "ED": 3, "EC": 2}
    aogm = 10 * 5 + 5 * 1 + 1 * 7 + 1.5 * 20 + 1 * 3 + 1 * 2
    run = {"metrics.TRA": 1 - aogm / 1000, "metrics.AOGM_0": 1000.0,
           **{f"metrics.AOGM_{part}": float(n) for part, n in counts.items()}}
    row = breakdown_row("x", run)
    assert row["loss_FN"] == pytest.approx(0.05) and row["loss_EA"] == pytest.approx(0.03)
    assert row["loss_detection"] == pytest.approx((50 + 5 + 7) / 1000)
    assert row["loss_links"] == pytest.approx((30 + 3 + 2) / 1000) and row["main_cause"] == "missed cells (FN)"


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("src", "href"):
            if values.get(key) and not values[key].startswith("data:"):
                self.external.append(values[key])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained(logged: dict) -> None:
    from reports.report import build_report

    report = build_report(DATASET, "ci", logged["root"] / "out-html", log=False)
    parser = _Structure()
    parser.feed(report.html.read_text())
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert parser.external == [] and "script" not in parser.tags and "link" not in parser.tags
    kinds = [src.split(";")[0] for src in parser.images]
    assert kinds.count("data:image/gif") == 3  # one animated preview per generator (all folders exist)
    gifs = [Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) for src in parser.images
            if src.startswith("data:image/gif")]
    assert [g.n_frames for g in gifs] == [min(16, len(WINDOW_FRAMES))] * 3  # 16-frame previews of a 10-frame window
    text = " ".join(parser.text)
    for name in ("real", "mitogen", "bvdm", FLOOR_ROW):
        assert name in text
    assert {p.name for p in report.figures} >= {"metrics.png", "timings.png", "preview-bvdm.gif", "samples-real.png"}
    # one table model: every Markdown table is an HTML section with the same title and the same prose
    page = report.html.read_text()
    headings = [line[3:] for line in report.markdown.read_text().splitlines() if line.startswith("## ")]
    assert len(headings) >= 3, headings
    for heading in headings:
        assert f"<h2>{html.escape(heading)}</h2>" in page, heading
    assert html.escape(READING_GUIDE) in page and READING_GUIDE in report.markdown.read_text()


def test_report_falls_back_to_logged_samples(logged: dict, tmp_path: Path) -> None:
    """A run whose stage folder is gone still shows the PNGs its generate stage logged."""
    from reports.report import build_report
    from reports.runs import stage_record, stage_runs

    bvdm = logged["rows"]["bvdm"]["run_id"]
    generate = stage_runs(DATASET, bvdm)["generate"]
    link = Path(stage_record(generate)["folder"]) / "synthetic"
    moved = tmp_path / "moved"
    link.rename(moved)
    try:
        report = build_report(DATASET, "ci", tmp_path / "out", log=False)
    finally:
        moved.rename(link)
    parser = _Structure()
    parser.feed(report.html.read_text())
    kinds = [src.split(";")[0] for src in parser.images]
    assert kinds.count("data:image/gif") == 2
    assert "bvdm logged sample" in report.html.read_text()


def test_runs_under_another_protocol_are_excluded_not_mixed(logged: dict, data: ScoredData, tmp_path: Path) -> None:
    """A run scored against another reference (here: the old protocol's training sequence) never enters the table."""
    from reports.report import build_report

    old = log_scored_run("cellcyclegan", "ci", data.window, data.good_synthetic, data.good_res, logged["root"] / "st",
                         data.cache, tags={"realism_reference": f"{DATASET}/01"})
    report = build_report(DATASET, "ci", tmp_path / "out", log=False)
    assert "cellcyclegan" not in set(report.table["generator"])
    text = report.markdown.read_text()
    assert f"cellcyclegan (run {old['run_id'][:8]}): realism protocol differs" in text
    assert f"'{DATASET}/01' vs '{DATASET}/02'" in text


def test_report_without_runs_is_one_clear_error(logged: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--dataset", "Fluo-N2DL-HeLa", "--out", str(logged["root"] / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no finished benchmark runs for Fluo-N2DL-HeLa") and "\n" not in err


def test_dagger_marks_rank_deficient_frechet_distances_only() -> None:
    import pandas as pd

    table = pd.DataFrame([
        {"generator": "small", "run_id": "a", "FID": 80.0, "KID": 0.05, "FVD": 300.0, "KVD": 30.0, "n_fid": 1024, "n_fvd": 120},
        {"generator": "full", "run_id": "b", "FID": 20.0, "KID": 0.01, "FVD": 90.0, "KVD": 9.0, "n_fid": 2048, "n_fvd": 400},
    ])
    shown = display_table(table).set_index("generator")
    assert shown.loc["small", "FID"].endswith("†") and shown.loc["small", "FVD"].endswith("†")
    assert not any(shown.loc[g, m].endswith("†") for g in ("small", "full") for m in ("KID", "KVD"))
    assert not shown.loc["full", "FID"].endswith("†") and not shown.loc["full", "FVD"].endswith("†")
    assert "FID N < 2048" in n_summary(table) and "FVD N < 400" in n_summary(table)


def test_table1_aggregates_seeds_and_shows_them_on_demand(data: ScoredData, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Two seeds of mitogen (one scored good, one broken: real, different SEG/TRA) are one Table 1 row: the
    mean and a 95 % t-interval across the seeds, n_seeds 2; a re-run of seed 0 replaces it; ``--per-seed``
    adds each seed's own row under it. A generator with one seed keeps its run's own interval."""
    from scipy import stats

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(data, tmp_path / "store"))
    stages = tmp_path / "stages"
    scored = {"window": data.window, "stage_root": stages, "cache": data.cache, "realism": False}
    log_scored_run("mitogen", "ci", synthetic_dir=data.noise_synthetic, res_dir=data.broken_res, seed=0, **scored)
    seed0 = log_scored_run("mitogen", "ci", synthetic_dir=data.good_synthetic, res_dir=data.good_res, seed=0, **scored)
    seed1 = log_scored_run("mitogen", "ci", synthetic_dir=data.noise_synthetic, res_dir=data.broken_res, seed=1,
                           **scored)
    bvdm = log_scored_run("bvdm", "ci", data.window, data.good_synthetic, data.good_res, stages, data.cache)
    out = tmp_path / "out"
    assert main(["report", "--dataset", DATASET, "--profile", "ci", "--out", str(out), "--no-log", "--per-seed"]) == 0
    table = pd.read_csv(out / "reports" / f"{DATASET}-ci" / "table1.csv")
    mitogen = table[(table["generator"] == "mitogen") & table["seed_row"].isna()].iloc[0]
    values = [seed0["SEG"], seed1["SEG"]]
    mean = sum(values) / 2
    half = stats.t.ppf(0.975, 1) * abs(values[0] - values[1]) / math.sqrt(2) / math.sqrt(2)
    assert mitogen["n_seeds"] == 2 and mitogen["SEG"] == pytest.approx(mean)
    assert (mitogen["SEG_ci_low"], mitogen["SEG_ci_high"]) == pytest.approx((max(0, mean - half), min(1, mean + half)))
    assert mitogen["TRA"] == pytest.approx((seed0["TRA"] + seed1["TRA"]) / 2)
    per_seed = table[(table["generator"] == "mitogen") & table["seed_row"].notna()]
    assert sorted(per_seed["SEG"]) == pytest.approx(sorted(values))
    one = table[table["generator"] == "bvdm"].iloc[0]
    assert one["n_seeds"] == 1 and (one["FID_ci_low"], one["FID_ci_high"]) == pytest.approx(
        (bvdm["fid_ci_low"], bvdm["fid_ci_high"]))
    markdown = capsys.readouterr().out
    assert "| mitogen · seed 0 |" in markdown and "| mitogen · seed 1 |" in markdown
    assert "Student-t interval of the mean across seeds" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| generator |")).split("|")
    row = next(line for line in markdown.splitlines() if line.startswith("| mitogen |")).split("|")
    assert row[header.index(" seeds ")].strip() == "2" and row[header.index(" interval ")].strip() == "t, 2 seeds"
    bvdm_row = next(line for line in markdown.splitlines() if line.startswith("| bvdm |")).split("|")
    assert bvdm_row[header.index(" interval ")].strip() == "run"  # one seed: its run's own interval


def test_table_1d_puts_each_tracker_beside_the_other_and_says_when_the_order_changes(
        data: ScoredData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs tagged with another tracker never replace a generator's Table 1 row (the default tracker's), and
    Table 1d lists every (generator, tracker) with its TRA rank. Here the GT-derived result goes to real under
    the learned tracker and to mitogen under trackastra, so the order flips and the report says so."""
    from reports.report import build_report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(data, tmp_path / "store"))
    scored = {"window": data.window, "stage_root": tmp_path / "stages", "cache": data.cache, "realism": False}
    good = {"synthetic_dir": data.good_synthetic, "res_dir": data.good_res}
    broken = {"synthetic_dir": data.noise_synthetic, "res_dir": data.broken_res}
    rows = {("real", "learned"): log_scored_run("real", "ci", **good, **scored),
            ("mitogen", "learned"): log_scored_run("mitogen", "ci", **broken, **scored, tags={"tracker": "learned"}),
            ("real", "trackastra"): log_scored_run("real", "ci", **broken, **scored, tags={"tracker": "trackastra"}),
            ("mitogen", "trackastra"): log_scored_run("mitogen", "ci", **good, **scored,
                                                      tags={"tracker": "trackastra"})}
    assert rows[("real", "learned")]["TRA"] > rows[("mitogen", "learned")]["TRA"]  # the data make the flip real

    report = build_report(DATASET, "ci", tmp_path / "out", log=False)
    table1 = pd.read_csv(report.folder / "table1.csv").set_index("generator")
    for name in ("real", "mitogen"):  # the newer trackastra runs did not displace the learned rows
        assert table1.loc[name, "TRA"] == pytest.approx(rows[(name, "learned")]["TRA"])
    trackers = pd.read_csv(report.folder / "table1d_trackers.csv")
    assert list(zip(trackers["generator"], trackers["tracker"], strict=True)) == [
        ("real", "learned"), ("real", "trackastra"), ("mitogen", "learned"), ("mitogen", "trackastra")]
    for _, row in trackers.iterrows():
        assert row["TRA"] == pytest.approx(rows[(row["generator"], row["tracker"])]["TRA"])
        assert row["SEG"] == pytest.approx(rows[(row["generator"], row["tracker"])]["SEG"])
    ranks = {(r["generator"], r["tracker"]): r["TRA_rank"] for _, r in trackers.iterrows()}
    assert ranks == {("real", "learned"): 1, ("mitogen", "learned"): 2, ("real", "trackastra"): 2,
                     ("mitogen", "trackastra"): 1}
    markdown = report.markdown.read_text()
    assert "## Table 1d — the tracker choice" in markdown
    assert ("the order of the generators CHANGES with the tracker (learned: real > mitogen; "
            "trackastra: mitogen > real)") in markdown


def test_table_1d_is_absent_with_one_tracker_and_says_same_order_when_it_holds() -> None:
    from reports.downstream import order_sentence, tracker_table

    runs = pd.DataFrame({"tags.generator": ["real", "bvdm", "real", "bvdm"],
                         "tags.tracker": [None, "learned", "trackastra", "trackastra"],
                         "start_time": pd.to_datetime([1, 2, 3, 4], unit="s"),
                         "metrics.SEG": [0.9, 0.8, 0.9, 0.8], "metrics.DET": [0.9, 0.8, 0.9, 0.8],
                         "metrics.TRA": [0.95, 0.85, 0.93, 0.9]})
    assert tracker_table(runs.iloc[:2]).empty  # one tracker (an untagged run is the default tracker)
    table = tracker_table(runs)
    assert order_sentence(table) == ("Ranked by TRA, the generators keep the same order under every tracker "
                                     "(learned: real > bvdm; trackastra: real > bvdm).")


def test_sweep_grid_is_the_papers_table2() -> None:
    points = sweep_points()
    assert [(p.t_first, p.t_next) for p in points if "t_first" in p.series] == [(100, 10), (200, 10), (400, 10),
                                                                                (600, 10)]
    assert sorted((p.t_first, p.t_next) for p in points if "t_next" in p.series) == [(200, 0), (200, 10), (200, 30),
                                                                               (200, 50), (200, 200)]
    assert len(points) == 8  # (200, 10) lies on both lines and runs once


def test_sweep_runs_are_tagged_and_tabulated(logged: dict, data: ScoredData) -> None:
    """Runs tagged as the sweep tags its grid points (``sweep_run_tags``) are read back into Table 2: one row
    per (series, point), a point with two seeds as their mean and t-interval. The runs carry real scores;
    the real pipeline on Ray is exercised by test_sweep_ray (here the BVDM fit would take far too long)."""
    from benchmark.metrics.ctc import ctc_scores
    from benchmark.sweep_plan import sweep_run_tags
    from benchmark.sweep_spec import load_spec

    scores = ctc_scores(data.good_res, CTCSequence(data.window, "02").gt_dir, ("SEG", "DET", "TRA"))
    spec = load_spec(ROOT / "benchmark" / "sweeps" / "table2.toml")
    assert list(spec.grid) == [p.overrides for p in sweep_points()]  # the shipped spec IS the paper's grid
    tra: dict[tuple[int, int], list[float]] = {}
    for point in spec.grid:
        t_first, t_next = point[T_FIRST_PARAM], point[T_NEXT_PARAM]
        if t_first == 600:
            continue  # a point that failed: absent from the table
        for seed in (0, 1) if (t_first, t_next) == (200, 200) else (0,):
            value = scores["TRA"] - t_next / 1000 - seed / 100
            tra.setdefault((t_first, t_next), []).append(value)
            tags = {"generator": "bvdm", "profile": "ci", "stage": "run",
                    **sweep_run_tags(spec.name, spec.digest, f"run-{seed}", point)}
            config = {"generator": "bvdm", "profile": "ci", "seed": seed, "generator_params": point}
            with experiment.start_run(f"bvdm-s{seed}-ci", DATASET, config=config, tags=tags):
                experiment.log_metrics({**scores, "TRA": value})

    table = sweep_table(DATASET, "ci", "bvdm")
    assert len(table) == 8  # 9 grid cells minus the failed (600, 10); (200, 10) appears on both lines
    indep = table[(table["t_first"] == 200) & (table["t_next"] == 200)].iloc[0]
    assert bool(indep["independent"]) and indep["n_seeds"] == 2
    assert indep["TRA"] == pytest.approx(sum(tra[(200, 200)]) / 2)
    assert indep["TRA_ci_low"] < indep["TRA"] < indep["TRA_ci_high"]
    one = table[(table["t_first"] == 100)].iloc[0]
    assert one["n_seeds"] == 1 and one["TRA"] == pytest.approx(tra[(100, 10)][0])
    # sweep runs stay out of Table 1
    assert logged["rows"]["bvdm"]["run_id"] in set(latest_per_generator(parent_runs(DATASET, "ci"))["run_id"])
    assert set(parent_runs(DATASET, "ci", sweep=SWEEP_NAME)[f"tags.grid.{T_NEXT_PARAM}"]) == {"0", "10", "30", "50", "200"}
    paths = write_sweep_report(DATASET, "ci", logged["root"] / "sweep", "bvdm")
    assert {p.name for p in paths} == {"table2.md", "table2.csv", "table2.png"}
    md = paths[0].read_text()
    assert "| T_fnon0 sweep | 200 | 200 (indep.) |" in md and md.rstrip().endswith("| 2 |")  # its last row: 2 seeds


@pytest.mark.slow
def test_report_screenshot_with_headless_chromium(logged: dict, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from reports.report import build_report

    report = build_report(DATASET, "ci", tmp_path / "out", log=False)
    png = tmp_path / "report.png"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(report.html), str(png)],
                   check=True, timeout=120)
    image = Image.open(png).convert("L")
    assert image.width >= 1000 and image.height >= 1000
    extrema = image.getextrema()
    assert extrema[1] - extrema[0] > 100  # rendered content, not a blank page


def test_markdown_table_text_is_pinned() -> None:
    """The one writer: header, alignment row (left for text columns, right for numbers), cells as given."""
    frame = pd.DataFrame({"generator": ["bvdm", "mitogen"], "FID": ["30.5 [28.1, 33.3]", "–"], "N crops": ["12", "9"]})
    assert markdown_table(frame, left=("generator",)) == (
        "| generator | FID | N crops |\n"
        "|---|---:|---:|\n"
        "| bvdm | 30.5 [28.1, 33.3] | 12 |\n"
        "| mitogen | – | 9 |"
    )
    assert markdown_table(frame.iloc[:0]) == "| generator | FID | N crops |\n|---:|---:|---:|"


def test_report_tables_go_through_the_one_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table 1, Table 1b and Table 2 each render their display frame with ``markdown_table`` (exact text)."""
    from reports import comparisons, document, sweep, tables

    table1 = pd.DataFrame([{"generator": "bvdm", "run_id": "abcdef123456", "FID": 30.5, "FID_ci_low": 28.1,
                            "FID_ci_high": 33.3, "n_fid": 2048}])
    text = tables.to_markdown(table1, "Table 1", metrics=("FID",))
    assert "| generator | FID | N crops | run |\n|---|---:|---:|---|\n| bvdm | 30.5 [28.1, 33.3] | 2048 | abcdef12 |\n" in text
    seeds = table1.assign(n_seeds=2, run_ids=[["abcdef123456", "b"]])
    text = tables.to_markdown(seeds, "Table 1", metrics=("FID",))
    assert ("| generator | FID | N crops | seeds | interval | run |\n|---|---:|---:|---:|---|---|\n"
            "| bvdm | 30.5 [28.1, 33.3] | 2048 | 2 | t, 2 seeds | abcdef12 +1 |\n") in text

    pairs = pd.DataFrame([{"comparison": "a − b", "metric": "FID", "n": 100, "difference": -1.5, "ci_low": -2.0,
                           "ci_high": -1.0, "excludes_zero": True}])
    text = comparisons.comparisons_markdown(pairs, "Table 1b")
    assert text.endswith("| comparison | FID | N FID |\n|---|---:|---:|\n| a − b | -1.5 [-2, -1] * | 100 |\n")

    grid = pd.DataFrame([{"series": "t_next", "t_first": 200, "t_next": 200, "independent": True, "run_id": "r",
                          "TRA": 0.7, "TRA_ci_low": None, "TRA_ci_high": None, "n_fid": None, "n_fvd": None}])
    text = sweep.sweep_markdown(grid, "Table 2", metrics=("TRA",))
    assert text.endswith("| series | T_f0 | T_fnon0 | TRA | seeds |\n|---|---:|---:|---:|---:|\n"
                         "| T_fnon0 sweep | 200 | 200 (indep.) | 0.7 | – |\n")

    calls: list[list[str]] = []  # every table is a reports.document.TableDoc, laid out by the one writer
    monkeypatch.setattr(document, "markdown_table", lambda frame, left=(): calls.append(list(frame.columns)) or "")
    tables.to_markdown(table1, "Table 1", metrics=("FID",))
    comparisons.comparisons_markdown(pairs, "Table 1b")
    sweep.sweep_markdown(grid, "Table 2", metrics=("TRA",))
    assert calls == [["generator", "FID", "N crops", "run"], ["comparison", "FID", "N FID"],
                     ["series", "T_f0", "T_fnon0", "TRA", "seeds"]]


def test_no_other_module_writes_markdown_table_rows() -> None:
    """Alignment rows (``---:``) are written by ``reports.markdown`` only."""
    writers = sorted(str(p.relative_to(ROOT)) for package in ("benchmark", "generators", "downstream", "reports",
                                                              "scripts")
                     for p in (ROOT / package).rglob("*.py") if "---:" in p.read_text())
    assert writers == ["reports/markdown.py"]


def test_table3_comes_from_the_low_data_runs_and_leaves_table1_alone(data: ScoredData, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs tagged with a low-data condition (scored for real: good and broken results on the GOWT1 window) make
    Table 3 with the paired gain over real-only of the same K and seeds; Table 1 keeps the synthetic-only rows."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(data, tmp_path / "store"))
    scored = {"window": data.window, "stage_root": tmp_path / "stages", "cache": data.cache, "realism": False}
    low = {"real_frames": "2", "synthetic": "true", "real_fraction": "0.5"}
    for seed in (0, 1):
        log_scored_run("real", "ci", synthetic_dir=data.good_synthetic, res_dir=data.good_res, seed=seed,
                       tags={"condition": "real-2", **low, "synthetic": "false"}, **scored)
        log_scored_run("mitogen", "ci", synthetic_dir=data.noise_synthetic, res_dir=data.broken_res, seed=seed,
                       tags={"condition": "real-2+synthetic", **low}, **scored)
        alone = log_scored_run("mitogen", "ci", synthetic_dir=data.good_synthetic, res_dir=data.good_res, seed=seed,
                               **scored)
    log_scored_run("real", "ci", synthetic_dir=data.good_synthetic, res_dir=data.good_res, seed=0, **scored)
    out = tmp_path / "out"
    assert main(["report", "--dataset", DATASET, "--profile", "ci", "--out", str(out), "--no-log"]) == 0
    folder = out / "reports" / f"{DATASET}-ci"
    table1 = pd.read_csv(folder / "table1.csv")
    real_rows = table1[table1["generator"] == "real"]  # its default run only; the real-2 runs are Table 3's
    assert "mitogen" in set(table1["generator"]) and len(real_rows) == 1 and real_rows["n_seeds"].item() == 1
    assert table1.loc[table1["generator"] == "mitogen", "SEG"].item() == pytest.approx(alone["SEG"])
    table3 = pd.read_csv(folder / "table3.csv", dtype={"K": str}).set_index(["condition", "K"])
    mixed = table3.loc[("real + mitogen", "2")]
    assert mixed["n_seeds"] == 2 and mixed["gain_SEG_n"] == 2 and mixed["gain_SEG"] < 0
    assert mixed["gain_SEG_verdict"] == "hurts"  # broken results against good ones, the same on both seeds
    assert ("real only", "2") in table3.index and ("mitogen only", "0") in table3.index
    assert ("real only", "all") in table3.index and ("real only", "0") not in table3.index  # the real row: K = all
    assert "Table 3" in (folder / "table1.md").read_text() and (folder / "figures" / "table3.png").stat().st_size
