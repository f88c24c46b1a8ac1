"""Build the comparison report (Table 1 + figures) from MLflow and log it back as a ``report`` run."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd

from benchmark import experiment
from reports import figures
from reports.html import Section, image_tag, render_page, table_html
from reports.runs import latest_floor, latest_per_generator, parent_runs, search, stage_runs, synthetic_folder
from reports.tables import display_table, n_summary, table_rows, to_markdown, write_csv, write_text_atomic


@dataclass
class Report:
    """Where a report went: its folder, files, the table itself and the MLflow ``report`` run."""

    folder: Path
    markdown: Path
    csv: Path
    html: Path
    table: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    run_id: str | None = None


def report_folder(out_dir: Path, dataset: str, profile: str | None) -> Path:
    return Path(out_dir) / "reports" / f"{dataset}-{profile or 'all'}"


def _logged_samples(dataset: str, parent_run_id: str) -> list[bytes]:
    """PNG samples the generate stage logged (fallback when its synthetic folder is gone)."""
    generate = stage_runs(dataset, parent_run_id).get("generate")
    if generate is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=generate["run_id"], artifact_path="samples", dst_path=tmp)
        except Exception:  # noqa: BLE001 - no samples logged
            return []
        return [p.read_bytes() for p in sorted(Path(local).glob("*.png"))]


def _first_sequence(folder: Path) -> str | None:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    return names[0] if names else None


def build_report(dataset: str, profile: str | None = None, out_dir: Path = Path("runs"), log: bool = True,
                 preview_frames: int = 16) -> Report:
    """Table 1 (Markdown, CSV) and a self-contained HTML page for the newest parent run per generator."""
    runs = latest_per_generator(parent_runs(dataset, profile))
    if runs.empty:
        raise ValueError(f"no finished benchmark runs for {dataset}" + (f" (profile {profile})" if profile else "")
                         + f" in {experiment.tracking_uri()}; run `python -m benchmark run` first")
    floor = latest_floor(dataset, profile)
    table = table_rows(runs, floor)
    folder = report_folder(out_dir, dataset, profile)
    fig_dir = folder / "figures"
    title = f"Table 1 — {dataset}, profile {profile or 'any'}"
    markdown = write_text_atomic(folder / "table1.md", to_markdown(table, title))
    csv = write_csv(table, folder / "table1.csv")
    written: list[Path] = []

    summary = Section("Table 1: downstream (SEG/DET/TRA on the real held-out sequence) and realism")
    summary.add_text(f"N: {n_summary(table)}. Values: point estimate [95 % cluster-bootstrap CI over tracks]; "
                     "lower is better for FVD/FID/KVD/KID. Newest finished run per generator.")
    if floor is None:
        summary.add_text("No real-vs-real floor run logged for this dataset (reports.runs.log_floor).")
    summary.add_html(table_html(display_table(table)))
    sections = [summary]

    bars = figures.metric_bars(table)
    if bars is not None:
        png = figures.figure_png(bars)
        written.append(write_text_atomic(fig_dir / "metrics.png", png))
        sections.append(Section("Scores with confidence intervals", [image_tag(png, alt="metric bars")]))

    samples = Section("Synthetic samples (mask outlines in yellow)")
    for _, run in runs.iterrows():
        name, run_id = str(run["tags.generator"]), str(run["run_id"])
        folder_syn = synthetic_folder(dataset, run_id)
        parts = [f"<h3>{name}</h3>"]
        sequence = _first_sequence(folder_syn) if folder_syn is not None else None
        if sequence is not None:
            png = figures.figure_png(figures.sample_frames(folder_syn, sequence))
            gif = figures.preview_gif(folder_syn, sequence, n_frames=preview_frames)
            written.append(write_text_atomic(fig_dir / f"samples-{name}.png", png))
            written.append(write_text_atomic(fig_dir / f"preview-{name}.gif", gif))
            parts.append('<div class="row"><figure>' + image_tag(png, alt=f"{name} sample frames")
                         + f"<figcaption>frames of synthetic sequence {sequence}</figcaption></figure><figure>"
                         + image_tag(gif, "image/gif", alt=f"{name} preview")
                         + f"<figcaption>animated preview, first {preview_frames} frames</figcaption></figure></div>")
        else:
            logged = _logged_samples(dataset, run_id)
            parts += [image_tag(p, alt=f"{name} logged sample") for p in logged] or \
                [f'<p class="note">no synthetic folder on disk and no logged samples for run {run_id}</p>']
        samples.add_html("".join(parts))
    sections.append(samples)

    timings = figures.timing_bars(table)
    if timings is not None:
        png = figures.figure_png(timings)
        written.append(write_text_atomic(fig_dir / "timings.png", png))
        sections.append(Section("Wall time per stage", [image_tag(png, alt="stage timings")]))

    provenance = Section("Runs")
    cols = [c for c in ("tags.generator", "run_id", "tags.mlflow.runName", "params.seed", "tags.git_commit",
                        "tags.device", "start_time") if c in runs.columns]
    provenance.add_html(table_html(runs[cols].astype(str)))
    provenance.add_text(f"MLflow store: {experiment.tracking_uri()}; experiment {experiment.experiment_name(dataset)}")
    sections.append(provenance)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(f"synthvid benchmark — {dataset}", f"profile {profile or 'any'}; generated {stamp}", sections)
    html_path = write_text_atomic(folder / "report.html", page)
    report = Report(folder, markdown, csv, html_path, table, written)
    if log:
        report.run_id = log_report(report, dataset, profile, list(runs["run_id"]))
    return report


def log_report(report: Report, dataset: str, profile: str | None, source_runs: list[str]) -> str:
    """A ``report`` run (tag ``stage=report``) holding the report folder and the table as JSON."""
    tags = {"stage": "report", "profile": profile or "any", "source_runs": ",".join(source_runs)[:5000]}
    with experiment.start_run(f"report-{profile or 'any'}", dataset, tags=tags) as run:
        mlflow.log_artifacts(str(report.folder), "report")
        mlflow.log_dict({"rows": report.table.astype(object).where(report.table.notna(), None).to_dict("records")},
                        "report/table1.json")
    return run.info.run_id


def report_runs(dataset: str) -> pd.DataFrame:
    """Every logged report run (newest first)."""
    return search(dataset, "tags.stage = 'report'")
