"""Build the comparison report (Table 1 + figures) from MLflow and log it back as a ``report`` run."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from benchmark import experiment
from benchmark.io import atomic_write_bytes, atomic_write_text
from reports import figures
from reports.comparisons import comparisons_doc, paired_comparisons
from reports.document import TableDoc, render_markdown, render_section
from reports.downstream import breakdown_doc, downstream_breakdown, tracker_doc, tracker_table
from reports.html import Section, image_tag, render_page, table_html
from reports.lowdata import write_lowdata
from reports.runs import (
    WEIGHT_TAGS,
    latest_floor,
    latest_oracle,
    latest_per_generator,
    latest_per_seed,
    latest_per_tracker,
    metric,
    parent_runs,
    protocol_of,
    stage_artifact_uri,
    stage_runs,
    synthetic_folder,
    weight_tags,
)
from reports.tables import FLOOR_ROW, display_table, seed_table, table1_doc, table_rows, write_csv

logger = logging.getLogger(__name__)


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


#: tags a run and the floor must agree on where both carry them (a user's run beside an imported bundle): the
#: reference data's content digest and the realism protocol's code version
PROVENANCE_TAGS = ("reference_checksum", "protocol_version")


def _tag(row: pd.Series, name: str) -> str | None:
    value = row.get(f"tags.{name}")
    return value if isinstance(value, str) and value else None


def comparable_runs(dataset: str, runs: pd.DataFrame, floor: pd.Series | None) -> tuple[pd.DataFrame, list[str]]:
    """Runs scored under the floor's realism protocol (reference, intensity map, clip mode), on the same
    reference data and protocol version (``PROVENANCE_TAGS``) and with its metric weights; the others are
    listed, never mixed into the table."""
    if floor is None:
        return runs, []
    expected = protocol_of(floor)
    floor_weights = {t: str(floor[f"tags.{t}"]) for t in WEIGHT_TAGS if isinstance(floor.get(f"tags.{t}"), str)}
    keep, excluded = [], []
    for index, run in runs.iterrows():
        name = f"{run['tags.generator']} (run {str(run['run_id'])[:8]})"
        got = protocol_of(run)
        if got != expected:
            diff = ", ".join(f"{k}={got[k]!r} vs {expected[k]!r}" for k in expected if got[k] != expected[k])
            excluded.append(f"{name}: realism protocol differs ({diff})")
            continue
        differs = [t for t in PROVENANCE_TAGS if _tag(floor, t) and _tag(run, t) and _tag(floor, t) != _tag(run, t)]
        if differs:
            excluded.append(f"{name}: " + ", ".join(f"{t} {_tag(run, t)} vs the floor's {_tag(floor, t)}"
                                                     for t in differs))
            continue
        weights = weight_tags(dataset, str(run["run_id"]))
        mixed = [t for t, v in weights.items() if t in floor_weights and floor_weights[t] != v]
        if mixed:
            excluded.append(f"{name}: scored with other metric weights ({', '.join(mixed)})")
            continue
        keep.append(index)
    return runs.loc[keep].reset_index(drop=True), excluded


def protocol_text(row: pd.Series) -> str:
    """One sentence stating the realism reference, intensity map and clip mode that every row shares."""
    p = protocol_of(row)
    source = row.get("tags.realism_intensity_source")
    return (f"Realism reference for every row and the floor: real held-out sequence {p['realism_reference'] or '?'}; "
            f"one intensity map {p['realism_intensity_map'] or '?'} → 8 bit"
            + (f" ({source})" if isinstance(source, str) else "")
            + f"; FVD clip mode: {p['realism_clip_mode'] or '?'}. The floor is the real training sequence scored "
            "like a generator against the same reference.")


def with_oracles(dataset: str, profile: str | None, runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Fill the frame-ceiling column from standalone oracle runs where a parent run has no oracle stage."""
    if "ORACLE_FID" not in table.columns:
        return table
    for i, row in table.iterrows():
        if pd.isna(row["ORACLE_FID"]) and row["generator"] != FLOOR_ROW:
            oracle = latest_oracle(dataset, str(row["generator"]), profile)
            if oracle is not None:
                table.loc[i, "ORACLE_FID"] = metric(oracle, "ORACLE_FID")
    return table


def paired_table(dataset: str, runs: pd.DataFrame, floor: pd.Series | None, n_boot: int) -> pd.DataFrame:
    """Paired differences between the rows (and each row vs the floor), from the features the stages logged."""
    if floor is None:
        return pd.DataFrame()
    generators = {}
    for _, run in runs.iterrows():
        uri = stage_artifact_uri(dataset, str(run["run_id"]), "realism")
        if uri is not None:
            generators[str(run["tags.generator"])] = uri
    if not generators:
        return pd.DataFrame()
    try:
        return paired_comparisons(str(floor["artifact_uri"]), generators, n_boot=n_boot)
    except (OSError, MlflowException) as exc:  # an artifact that is gone: say so in the report, do not fail it
        logger.warning("paired comparisons unavailable: %s", exc)
        return pd.DataFrame()


def with_extra_profiles(dataset: str, runs: pd.DataFrame, extra_profiles: Sequence[str]) -> pd.DataFrame:
    """Append the newest run per generator and seed of other profiles (e.g. ``cpu-paper``: BVDM at the paper's
    training budget) as rows named ``<generator> [<profile>]``; they pass the same protocol check as every row."""
    frames = [runs]
    for extra in extra_profiles:
        more = latest_per_seed(parent_runs(dataset, extra))
        if more.empty:
            raise ValueError(f"no finished benchmark runs for {dataset} with profile {extra}")
        more = more.copy()
        more["tags.generator"] = more["tags.generator"].astype(str) + f" [{extra}]"
        frames.append(more)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else runs


STALE_TITLE = "Stale result bundles (computed by other code versions; never pooled with the rows above)"


def stale_rows(dataset: str, profile: str | None) -> pd.DataFrame:
    """The newest run per generator and seed imported from a stale result bundle (``tags.stale=true``): one row
    each, with the bundle and why it is stale. They stay out of Table 1, its pooled seeds and the paired
    differences; ``python -m benchmark export --replace`` of a re-run refreshes them."""
    runs = latest_per_seed(parent_runs(dataset, profile, stale=True))
    if runs.empty:
        return pd.DataFrame()
    table = table_rows(runs)
    table["bundle"] = [str(v) for v in runs.get("tags.bundle", pd.Series([""] * len(runs)))]
    table["stale_reason"] = [str(v) for v in runs.get("tags.stale_reason", pd.Series([""] * len(runs)))]
    return table


def stale_doc(table: pd.DataFrame) -> TableDoc:
    """The stale rows as their own marked table, each bundle with the reason it is stale."""
    return TableDoc(STALE_TITLE, display_table(table),
                    bullets=[f"`{row['bundle']}`: {row['stale_reason']}" for _, row in table.iterrows()],
                    left=("generator", "machine", "run"))


@dataclass
class Part:
    """One table of the report: its Markdown (appended to ``table1.md``), its HTML section and its files."""

    markdown: str = ""
    section: Section | None = None
    files: list[Path] = field(default_factory=list)


def build_report(dataset: str, profile: str | None = None, out_dir: Path = Path("runs"), log: bool = True,
                 preview_frames: int = 16, n_boot: int = 200, extra_profiles: Sequence[str] = (),
                 per_seed: bool = False) -> Report:
    """Table 1 (Markdown, CSV) and a self-contained HTML page: one row per generator over the newest parent run
    of each of its seeds (``seed_table``; ``per_seed`` adds a row per seed), then its companion tables (1b-1d,
    Table 3, stale bundles), figures, samples and provenance. The paired comparisons and the samples use the
    newest run per generator."""
    all_runs = latest_per_seed(parent_runs(dataset, profile))
    if all_runs.empty:
        raise ValueError(f"no finished benchmark runs for {dataset}" + (f" (profile {profile})" if profile else "")
                         + f" in {experiment.tracking_uri()}; run `python -m benchmark run` first")
    all_runs = with_extra_profiles(dataset, all_runs, extra_profiles)
    floor = latest_floor(dataset, profile)
    all_runs, excluded = comparable_runs(dataset, all_runs, floor)
    table = with_oracles(dataset, profile, all_runs, seed_table(all_runs, floor, per_seed=per_seed))
    runs = latest_per_generator(all_runs)
    folder = report_folder(out_dir, dataset, profile)
    protocol = protocol_text(floor if floor is not None else runs.iloc[0])
    parts = [table1_part(table, dataset, profile, protocol, floor, excluded),
             paired_part(dataset, runs, floor, n_boot, folder), breakdown_part(dataset, runs, folder),
             trackers_part(dataset, profile, floor, folder), lowdata_part(dataset, profile, folder),
             stale_part(dataset, profile, folder)]
    markdown = atomic_write_text(folder / "table1.md", "".join(part.markdown for part in parts))
    csv = write_csv(table, folder / "table1.csv")
    sections = [part.section for part in parts if part.section is not None]
    written = [path for part in parts for path in part.files]
    for part in (figure_part(table, folder / "figures"), samples_part(dataset, runs, folder / "figures",
                                                                      preview_frames), timings_part(table, folder / "figures")):
        sections += [part.section] if part.section is not None else []
        written += part.files
    sections.append(provenance_section(dataset, all_runs, runs))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(f"synthvid benchmark — {dataset}", f"profile {profile or 'any'}; generated {stamp}", sections)
    html_path = atomic_write_text(folder / "report.html", page)
    report = Report(folder, markdown, csv, html_path, table, written)
    if log:
        report.run_id = log_report(report, dataset, profile, list(all_runs["run_id"]))
    return report


def table1_part(table: pd.DataFrame, dataset: str, profile: str | None, protocol: str, floor: pd.Series | None,
                excluded: list[str]) -> Part:
    """Table 1 itself (its CSV is written by ``build_report``)."""
    doc = table1_doc(table, f"Table 1 — {dataset}, profile {profile or 'any'}: downstream (SEG/DET/TRA on the "
                     "real held-out sequence) and realism", protocol=protocol)
    if floor is None:
        doc.notes.append("No real-vs-real floor run logged for this dataset and profile (the pipeline's floor stage).")
    doc.footnotes += [f"Excluded (not comparable with this table's protocol): {reason}" for reason in excluded]
    return Part(render_markdown(doc), render_section(doc))


def doc_part(doc: TableDoc, files: Sequence[Path] = (), newline: bool = True) -> Part:
    """A companion table's part: its Markdown (after a blank line) and its HTML section from one ``TableDoc``."""
    return Part(("\n" if newline else "") + render_markdown(doc), render_section(doc), list(files))


def paired_part(dataset: str, runs: pd.DataFrame, floor: pd.Series | None, n_boot: int, folder: Path) -> Part:
    """Table 1b: paired realism differences (same reference resample, equal N)."""
    comparisons = paired_table(dataset, runs, floor, n_boot)
    files = [] if comparisons.empty else [write_csv(comparisons, folder / "table1b_paired.csv")]
    return doc_part(comparisons_doc(comparisons, f"Table 1b — paired realism differences, {dataset}"), files)


def breakdown_part(dataset: str, runs: pd.DataFrame, folder: Path) -> Part:
    """Table 1c: where the downstream loses TRA (AOGM error parts on the real held-out sequence)."""
    breakdown = downstream_breakdown(runs)
    files = [] if breakdown.empty else [write_csv(breakdown, folder / "table1c_downstream.csv")]
    return doc_part(breakdown_doc(breakdown, f"Table 1c — where the downstream loses TRA, {dataset}"), files)


def trackers_part(dataset: str, profile: str | None, floor: pd.Series | None, folder: Path) -> Part:
    """Table 1d: every generator under every tracker that scored it (nothing when one tracker ran)."""
    newest = latest_per_tracker(parent_runs(dataset, profile, tracker=None))
    trackers = tracker_table(comparable_runs(dataset, newest, floor)[0])
    if trackers.empty:
        return Part()
    return doc_part(tracker_doc(trackers, f"Table 1d — the tracker choice, {dataset}"),
                    [write_csv(trackers, folder / "table1d_trackers.csv")])


def lowdata_part(dataset: str, profile: str | None, folder: Path) -> Part:
    """Table 3 (``reports.lowdata``) when the store holds runs of the low-data protocol."""
    text, section, files = write_lowdata(dataset, profile, folder)
    return Part("\n" + text if text else "", section, files)


def stale_part(dataset: str, profile: str | None, folder: Path) -> Part:
    """The rows of result bundles made by other code versions: shown apart, never pooled."""
    stale = stale_rows(dataset, profile)
    if stale.empty:
        return Part()
    return doc_part(stale_doc(stale), [write_csv(stale, folder / "table1_stale.csv")])


def figure_part(table: pd.DataFrame, fig_dir: Path) -> Part:
    bars = figures.metric_bars(table)
    if bars is None:
        return Part()
    png = figures.figure_png(bars)
    return Part(section=Section("Scores with confidence intervals", [image_tag(png, alt="metric bars")]),
                files=[atomic_write_bytes(fig_dir / "metrics.png", png)])


def samples_part(dataset: str, runs: pd.DataFrame, fig_dir: Path, preview_frames: int) -> Part:
    """Sample frames and an animated preview of each generator's newest synthetic video (or its logged samples
    when the folder is gone)."""
    samples = Section("Synthetic samples (mask outlines in yellow)")
    written: list[Path] = []
    for _, run in runs.iterrows():
        name, run_id = str(run["tags.generator"]), str(run["run_id"])
        folder_syn = synthetic_folder(dataset, run_id)
        parts = [f"<h3>{name}</h3>"]
        sequence = _first_sequence(folder_syn) if folder_syn is not None else None
        if sequence is not None:
            png = figures.figure_png(figures.sample_frames(folder_syn, sequence))
            gif = figures.preview_gif(folder_syn, sequence, n_frames=preview_frames)
            written.append(atomic_write_bytes(fig_dir / f"samples-{name}.png", png))
            written.append(atomic_write_bytes(fig_dir / f"preview-{name}.gif", gif))
            parts.append('<div class="row"><figure>' + image_tag(png, alt=f"{name} sample frames")
                         + f"<figcaption>frames of synthetic sequence {sequence}</figcaption></figure><figure>"
                         + image_tag(gif, "image/gif", alt=f"{name} preview")
                         + f"<figcaption>animated preview, first {preview_frames} frames</figcaption></figure></div>")
        else:
            logged = _logged_samples(dataset, run_id)
            parts += [image_tag(p, alt=f"{name} logged sample") for p in logged] or \
                [f'<p class="note">no synthetic folder on disk and no logged samples for run {run_id}</p>']
        samples.add_html("".join(parts))
    return Part(section=samples, files=written)


def timings_part(table: pd.DataFrame, fig_dir: Path) -> Part:
    timings = figures.timing_bars(table)
    if timings is None:
        return Part()
    png = figures.figure_png(timings)
    return Part(section=Section("Wall time per stage", [image_tag(png, alt="stage timings")]),
                files=[atomic_write_bytes(fig_dir / "timings.png", png)])


def provenance_section(dataset: str, all_runs: pd.DataFrame, runs: pd.DataFrame) -> Section:
    provenance = Section("Runs")
    cols = [c for c in ("tags.generator", "run_id", "tags.mlflow.runName", "params.seed", "tags.git_commit",
                        "tags.device", "tags.machine_class", "tags.bundle", "start_time") if c in runs.columns]
    provenance.add_html(table_html(all_runs[cols].astype(str)))
    provenance.add_text(f"MLflow store: {experiment.tracking_uri()}; experiment {experiment.experiment_name(dataset)}")
    return provenance


def log_report(report: Report, dataset: str, profile: str | None, source_runs: list[str]) -> str:
    """A ``report`` run (tag ``stage=report``) holding the report folder and the table as JSON."""
    tags = {"stage": "report", "profile": profile or "any", "source_runs": ",".join(source_runs)[:5000]}
    with experiment.start_run(f"report-{profile or 'any'}", dataset, tags=tags) as run:
        mlflow.log_artifacts(str(report.folder), "report")
        mlflow.log_dict({"rows": report.table.astype(object).where(report.table.notna(), None).to_dict("records")},
                        "report/table1.json")
    return run.info.run_id
