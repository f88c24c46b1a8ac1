"""``python -m benchmark campaign SPEC.toml --budget MINUTES``: a sweep spec run across sessions, one budget at
a time, with the result bundles in ``results/`` as its only memory.

Compute does not outlive a session; git does. A campaign plans the spec (``benchmark.sweep``: datasets x
generators x seeds x grid points, the profile's ``[tracker] method``) against the bundles already under the
results root, runs only what is missing, and stops itself before its budget ends, so that what it finished is
committed and the next session goes on from there.

States of an item (its bundle is ``bundle_path(dataset, profile, generator, seed, tracker, grid point)`` under
the results root, the path ``export`` writes):

- ``done``: the bundle verifies and was made by the current code (``versions.version_differences`` empty);
- ``stale``: it verifies but the code versions differ: re-run and exported with replace;
- ``broken``: it fails verification: shown with its reason; the campaign refuses to start until it is fixed
  or removed (it never overwrites one silently);
- ``in progress``: no bundle, but its fit's resume checkpoints exist under ``<results>/_resume/``
  (``generators.fit_cache.resume_folder`` with ``SYNTHVID_RESUME_ROOT`` there: committed with the results,
  so a fit stopped at a deadline continues in the next session's fresh clone);
- ``missing``: nothing yet.

Estimates (minutes left) come only from records: the stage times (``time_<stage>_s``) of bundles of the same
dataset and profile (the same generator; for the generator-independent stages the median over generators
when the generator has none), a fit costs ~0 when a shipped or cached fit has its key, else the shipped fit
card's ``wall_s`` (or the recorded fit stage) times the fraction its resume checkpoints have left. Anything
else is ``unknown``, never guessed.

Order: whole rows, a row being (dataset, generator, tracker, grid point): rows with an item in progress first,
then by estimated minutes left (unknown last); seeds ascending within a row.

Deadline: ``start + budget - RESERVE_S``. Each item is a ``python -m benchmark run`` subprocess with
``SYNTHVID_DEADLINE`` = that deadline (a fit checkpoints there and exits 75) and ``SYNTHVID_RESUME_ROOT`` =
``<results>/_resume``; a child still running ``TERM_DELAY_S`` after the deadline (time for a fit to write its
checkpoint) gets SIGTERM, and SIGKILL ``KILL_AFTER_S`` later. The reserve covers both and the export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import experiment, shipped
from benchmark.budget import DEADLINE_ENV, RESUME_ROOT_ENV
from benchmark.bundle_cli import default_results, export_run, find_parent_run
from benchmark.bundles import RECORD, bundle_path, read_bundle
from benchmark.checksums import SUMS
from benchmark.config import RunConfig, split_point
from benchmark.paths import add_cache_argument
from benchmark.pipeline import generator_label, training_tags
from benchmark.stages import tracker_name
from benchmark.sweep_plan import plan_sweep, sweep_run_tags
from benchmark.sweep_spec import SweepSpec, load_spec
from benchmark.versions import version_differences
from generators import fit_cache
from generators.registry import get_generator

logger = logging.getLogger(__name__)

#: seconds kept back from the budget: SIGTERM delay + SIGKILL grace of a last child, its export, a clean exit
RESERVE_S = 180.0
#: a child still running this long after the deadline gets SIGTERM (its fit stops AT the deadline: this is
#: the time it has to write its checkpoint and exit 75)
TERM_DELAY_S = 15.0
#: and SIGKILL this long after the SIGTERM
KILL_AFTER_S = 60.0
#: ``run``'s exit status when a fit stopped at ``SYNTHVID_DEADLINE`` (sysexits' EX_TEMPFAIL)
EXIT_DEADLINE = 75
RESUME_DIR = "_resume"
STATES = ("done", "stale", "broken", "in progress", "missing")
TO_RUN = ("in progress", "stale", "missing")
#: stages whose time does not depend on the generator (its median over generators stands in)
GENERATOR_INDEPENDENT = frozenset({"window", "floor", "train-segmenter", "train-tracker", "eval-real"})


# ------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Item:
    """One run of the campaign: the sweep's run task with where its bundle goes (relative to the results root)."""

    config: RunConfig
    point: dict[str, Any]
    task_id: str
    tracker: str
    label: str  # the run's ``generator`` tag (``pipeline.generator_label``)
    relative: Path

    @property
    def name(self) -> str:
        return self.relative.as_posix()

    @property
    def row(self) -> tuple[str, str, str, str]:
        return (self.config.dataset, self.config.generator, self.tracker, json.dumps(self.point, sort_keys=True))


@dataclass(frozen=True)
class FitFacts:
    """What the campaign knows of an item's fit: its resume folder, whether a fit of its key is already there
    (shipped or cached), whether it checkpoints (``checkpoint_dir``) and a full fit's recorded wall time."""

    needs_fit: bool = False
    resume: Path | None = None
    available: bool = True
    resumable: bool = False
    wall_s: float | None = None


@dataclass
class ItemState:
    item: Item
    state: str
    reason: str = ""
    fit: FitFacts = field(default_factory=FitFacts)
    progress: dict[str, Any] | None = None
    estimate_s: float | None = None

    @property
    def fit_to_progress(self) -> bool:
        """A resumable fit still to make: started even when its estimate exceeds the time left."""
        return self.fit.resumable and not self.fit.available


def grid_point_text(point: dict[str, Any]) -> str | None:
    """The grid point's part of the bundle path exactly as ``export_run`` writes it from the run's
    ``grid_point`` tag (``json.dumps(point, sort_keys=True)``, read back)."""
    point = split_point(point)[0]  # downstream.* keys are the run's condition, a path level of its own
    if not point:
        return None
    return ",".join(f"{k}={v}" for k, v in json.loads(json.dumps(dict(point), sort_keys=True)).items())


def plan_items(spec: SweepSpec) -> list[Item]:
    """The spec's runs (``plan_sweep``'s run tasks, checked there) with their bundle paths."""
    items = []
    for task in plan_sweep(spec):
        if task.kind != "run":
            continue
        config, tracker, label = task.config, tracker_name(task.config), generator_label(task.config)
        relative = bundle_path(config.dataset, config.profile, label, config.seed, tracker, grid_point_text(task.point),
                               training_tags(config)["condition"])
        items.append(Item(config, dict(task.point), task.id, tracker, label, relative))
    return items


@contextmanager
def resume_root(results: Path) -> Iterator[Path]:
    """``SYNTHVID_RESUME_ROOT`` pointed at ``<results>/_resume`` for the duration (the fit cache reads it)."""
    root = Path(results).resolve() / RESUME_DIR
    previous = os.environ.get(RESUME_ROOT_ENV)
    os.environ[RESUME_ROOT_ENV] = str(root)
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop(RESUME_ROOT_ENV, None)
        else:
            os.environ[RESUME_ROOT_ENV] = previous


def fit_facts(spec: SweepSpec, item: Item, data_root: str | None, cache: dict[str, FitFacts]) -> FitFacts:
    """The item's ``FitFacts`` (memoised per generator and fit config: every seed shares them). Call inside
    ``resume_root``."""
    cls = get_generator(item.config.generator)
    if not cls.needs_fit:
        return FitFacts()
    memo = json.dumps([item.config.dataset, item.config.generator,
                       fit_cache.fit_config(cls, item.config.generator_params)], sort_keys=True, default=str)
    if memo not in cache:
        params, seq = fit_cache.profile_fit_inputs(spec.profile, item.config.dataset, item.config.generator,
                                                   split_point(item.point)[0], data_root)  # not downstream.*
        cards = [e.card for e in shipped.entries("fit") if e.card.get("generator") == item.config.generator
                 and e.card.get("dataset") == item.config.dataset]
        available = fit_cache.fit_available(item.config.generator, params, seq)
        walls = [float(c["wall_s"]) for c in cards if c.get("profile") == item.config.profile and c.get("wall_s")]
        cache[memo] = FitFacts(needs_fit=True, resume=fit_cache.resume_folder(item.config.generator, params, seq),
                               available=available,
                               resumable="checkpoint_dir" in {f.name for f in dataclasses.fields(cls.config_class)},
                               wall_s=statistics.median(walls) if walls else None)
    return cache[memo]


def bundle_state(folder: Path) -> tuple[str, str] | None:
    """``(state, reason)`` of the bundle at ``folder``: done, stale or broken; None when there is none (a
    folder holding only other bundles nested in it, another tracker or grid point, is none)."""
    if not ((folder / SUMS).exists() or (folder / RECORD).exists()):
        return None
    try:
        record = read_bundle(folder).record
    except ValueError as exc:
        return "broken", str(exc).splitlines()[0]
    reasons = version_differences(record.get("stage_versions"), record.get("protocol_version"))
    return ("stale", "; ".join(reasons)) if reasons else ("done", "")


def item_state(spec: SweepSpec, item: Item, results: Path, data_root: str | None,
               fits: dict[str, FitFacts]) -> ItemState:
    """One item's state (see the module docstring); call inside ``resume_root``."""
    found = bundle_state(Path(results) / item.relative)
    if found is not None and found[0] in ("done", "broken"):  # the fit no longer matters (nor the data)
        return ItemState(item, found[0], found[1])
    facts = fit_facts(spec, item, data_root, fits)
    if facts.resume is not None and facts.resume.is_dir() and not facts.available:
        return ItemState(item, "in progress", found[1] if found else "", facts, fit_cache.resume_progress(facts.resume))
    if found is not None:
        return ItemState(item, "stale", found[1], facts)
    return ItemState(item, "missing", "", facts)


# ------------------------------------------------------------------------------------------- estimates
def recorded_times(results: Path) -> dict[tuple[str, str, str], list[dict[str, float]]]:
    """``(dataset, profile, generator) -> [{stage: seconds}]``: the ``time_<stage>_s`` of every stage run of
    every verified bundle under ``results`` (``_resume`` and broken bundles left out); a cached fit stage's
    time (a load) is left out, since it says nothing of what fitting costs."""
    out: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    if not Path(results).is_dir():
        return out
    for entry in shipped.entries("bundle", results):  # the one discovery of bundles (``_resume`` left out)
        try:
            record = read_bundle(shipped.bundle_folder(entry)).record
        except ValueError:
            continue
        times = {}
        for name, entry in (record.get("stages") or {}).items():
            seconds = (entry.get("metrics") or {}).get(f"time_{name}_s")
            if seconds is not None and not (name == "fit" and (entry.get("tags") or {}).get("cached") == "true"):
                times[name] = float(seconds)
        key = (str(record.get("dataset")), str(record.get("profile")), str(record.get("generator")))
        out.setdefault(key, []).append(times)
    return out


def fit_fraction_left(progress: dict[str, Any] | None) -> float:
    """The fraction of a fit its resume checkpoints have left: the mean over its networks of what each has
    left (a network without a checkpoint, or of unknown total, has all of it left)."""
    if not progress:
        return 1.0
    left = []
    for value in progress.values():
        step, total = value if value else (0, None)
        left.append(1.0 - min(step / total, 1.0) if total else 1.0)
    return statistics.mean(left)


def estimate_seconds(state: ItemState, times: dict[tuple[str, str, str], list[dict[str, float]]]) -> float | None:
    """Seconds left of an item from what is recorded (see the module docstring); None: unknown."""
    if state.state == "done":
        return 0.0
    config = state.item.config
    own = times.get((config.dataset, config.profile, state.item.label), [])
    if not own:
        return None
    others = [t for (d, p, _g), runs in times.items() if (d, p) == (config.dataset, config.profile) for t in runs]
    total = 0.0
    shared = {name for run in others for name in run} & GENERATOR_INDEPENDENT  # the same for every generator
    for stage in sorted({name for run in own for name in run} | shared | ({"fit"} if state.fit.needs_fit else set())):
        seconds = _stage_seconds(stage, state, own, others)
        if seconds is None:
            return None
        total += seconds
    return total


def _stage_seconds(stage: str, state: ItemState, own: list[dict[str, float]],
                   others: list[dict[str, float]]) -> float | None:
    if stage == "fit" and state.fit.needs_fit:
        if state.fit.available:
            return 0.0  # a shipped or cached fit: loading it costs ~0
        recorded = [run["fit"] for run in own if "fit" in run]
        full = state.fit.wall_s if state.fit.wall_s is not None else (statistics.median(recorded) if recorded else None)
        return None if full is None else full * fit_fraction_left(state.progress)
    values = [run[stage] for run in own if stage in run]
    if not values and stage in GENERATOR_INDEPENDENT:
        values = [run[stage] for run in others if stage in run]
    return statistics.median(values) if values else None


# ------------------------------------------------------------------------------------------- order
def row_estimate(states: Sequence[ItemState]) -> float | None:
    values = [s.estimate_s for s in states]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def campaign_order(states: Sequence[ItemState]) -> list[ItemState]:
    """The items to run (in progress, stale, missing) in the campaign's order: whole rows, rows with an item
    in progress first, then by estimated time left (unknown last), spec order on ties; seeds ascending."""
    rows: dict[tuple[str, str, str, str], list[ItemState]] = {}
    for state in states:
        if state.state in TO_RUN:
            rows.setdefault(state.item.row, []).append(state)

    def rank(entry: tuple[int, list[ItemState]]) -> tuple[int, int, float, int]:
        index, members = entry
        estimate = row_estimate(members)
        busy = any(s.state == "in progress" for s in members)
        return (0 if busy else 1, estimate is None, estimate or 0.0, index)

    ordered = sorted(enumerate(rows.values()), key=rank)
    return [s for _i, members in ordered for s in sorted(members, key=lambda s: s.item.config.seed)]


# ------------------------------------------------------------------------------------------- assessment
@dataclass
class Assessment:
    spec: SweepSpec
    results: Path
    states: list[ItemState]

    def count(self, state: str) -> int:
        return sum(1 for s in self.states if s.state == state)


def assess(spec: SweepSpec, results: Path, data_root: str | None = None) -> Assessment:
    """Every item's state and estimate; runs nothing and needs no MLflow store."""
    items = plan_items(spec)
    fits: dict[str, FitFacts] = {}
    times = recorded_times(results)
    with resume_root(results):
        states = [item_state(spec, item, results, data_root, fits) for item in items]
    for state in states:
        state.estimate_s = estimate_seconds(state, times)
    return Assessment(spec, Path(results), states)


def _minutes(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 60:.1f}"


def progress_text(progress: dict[str, Any] | None) -> str:
    """``ddpm 1200/1500, flow -``."""
    parts = []
    for part, value in (progress or {}).items():
        if value is None:
            parts.append(f"{part} -")
        else:
            parts.append(f"{part} {value[0]}/{value[1] if value[1] is not None else '?'}")
    return ", ".join(parts)


def status_table(assessment: Assessment) -> str:
    """The ``--status`` table: item, state, estimated minutes left, fit progress or reason; then totals."""
    rows = [("item", "state", "min left", "notes")]
    for s in assessment.states:
        note = progress_text(s.progress) if s.state == "in progress" else s.reason
        rows.append((s.item.name, s.state, _minutes(s.estimate_s), note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  -----")
    todo = [s for s in assessment.states if s.state in TO_RUN]
    known = sum(s.estimate_s or 0.0 for s in todo)
    unknown = sum(1 for s in todo if s.estimate_s is None)
    lines.append("")
    lines.append("totals: " + ", ".join(f"{assessment.count(k)} {k}" for k in STATES))
    lines.append(f"estimate: {known / 60:.1f} min left for {len(todo) - unknown} item(s)"
                 + (f", {unknown} unknown" if unknown else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- running
def parse_budget(text: str) -> float:
    """``--budget`` in minutes: a finite number above the reserve, else one line."""
    try:
        minutes = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--budget {text}: not a number of minutes") from None
    if not math.isfinite(minutes) or minutes * 60 <= RESERVE_S:
        raise ValueError(f"--budget {text}: must be more than the {RESERVE_S / 60:g}-minute reserve the campaign "
                         "keeps for the last export and a clean exit")
    return minutes


def refuse_overlap(results: Path, out: Path) -> None:
    """The results root (committed) and the run's stage outputs (``--out``: large, never committed) apart."""
    a, b = Path(results).expanduser().resolve(), Path(out).expanduser().resolve()
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise ValueError(f"--results {results} and --out {out} overlap: the committed bundles and the runs' stage "
                         "outputs must be separate folders")


def item_command(item: Item, spec: SweepSpec, out: Path, data_root: str | None, cache: str | None) -> list[str]:
    """The child: ``python -m benchmark run`` of one item (its grid point as ``--param``, its ``downstream.*``
    keys as ``--downstream``)."""
    config = item.config
    command = [sys.executable, "-m", "benchmark", "run", "--generator", config.generator, "--dataset",
               config.dataset, "--profile", spec.profile, "--seed", str(config.seed), "--out", str(out)]
    generator, downstream = split_point(item.point)
    for option, values in (("--param", generator), ("--downstream", downstream)):
        for key, value in values.items():
            command += [option, f"{key}={json.dumps(value)}"]
    if data_root:
        command += ["--data-root", str(data_root)]
    if cache:
        command += ["--cache", str(cache)]
    return command


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the child leads its own session: its own children get it too
    except ProcessLookupError:
        pass


def run_child(command: list[str], env: dict[str, str], deadline: float, log_path: Path) -> tuple[int, bool]:
    """Run ``command`` (output to ``log_path``); ``(exit status, stopped)``: stopped when it was still running
    ``TERM_DELAY_S`` after ``deadline`` and got SIGTERM (then SIGKILL after ``KILL_AFTER_S``). The campaign
    interrupted itself stops the child the same way."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            try:
                return process.wait(timeout=max(0.0, deadline + TERM_DELAY_S - time.time())), False
            except subprocess.TimeoutExpired:
                logger.warning("deadline: sending SIGTERM to %s (pid %d)", command[3:5], process.pid)
            return _stop(process), True
        except BaseException:
            if process.poll() is None:
                _stop(process)
            raise


def _stop(process: subprocess.Popen) -> int:
    _signal(process, signal.SIGTERM)
    try:
        return process.wait(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL)
        return process.wait()


def export_item(item: Item, spec: SweepSpec, results: Path, started: float, replace: bool) -> Path:
    """The bundle of the item's run that just finished (the newest finished parent run of its coordinates,
    started after ``started``), its grid point tagged as a sweep would tag it, so that ``export_run`` writes
    it at the item's path."""
    from mlflow import MlflowClient


    config = item.config

    run_id = find_parent_run(config.dataset, config.profile, item.label, config.seed, item.tracker,
                             training_tags(config)["condition"])
    client = MlflowClient()
    if client.get_run(run_id).info.start_time < int(started * 1000) - 1000:
        raise ValueError(f"{item.name}: run exited 0 but no run of it newer than the campaign's start is in "
                         f"{experiment.tracking_uri()}")
    if split_point(item.point)[0]:
        for key, value in sweep_run_tags(spec.name, spec.digest, item.task_id, item.point).items():
            client.set_tag(run_id, key, value)
    bundle = export_run(run_id, results, replace=replace)
    if bundle.folder.resolve() != (Path(results) / item.relative).resolve():
        raise ValueError(f"{item.name}: export wrote {bundle.folder}, not the item's bundle path")
    return bundle.folder


@dataclass
class CampaignOutcome:
    assessment: Assessment
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: bool = False
    to_run: int = 0
    seconds: float = 0.0


def refuse_broken(assessment: Assessment) -> None:
    broken = [s for s in assessment.states if s.state == "broken"]
    if broken:
        more = f" (and {len(broken) - 1} more broken bundle(s))" if len(broken) > 1 else ""
        raise ValueError(f"{assessment.results / broken[0].item.relative}: broken result bundle ({broken[0].reason}); "
                         f"fix or remove it, the campaign never overwrites one{more}")


def run_campaign(spec: SweepSpec, budget_min: float, results: Path, out: Path, data_root: str | None = None,
                 cache: str | None = None) -> CampaignOutcome:
    """Run the spec's missing, stale and in-progress items in the campaign's order until the deadline."""
    start = time.time()
    deadline = start + budget_min * 60 - RESERVE_S
    refuse_overlap(results, out)
    assessment = assess(spec, results, data_root)
    refuse_broken(assessment)
    order = campaign_order(assessment.states)
    outcome = CampaignOutcome(assessment, to_run=len(order))
    logger.info("campaign %s: %d items, %d to run; deadline in %.1f min", spec.name, len(assessment.states),
                len(order), (deadline - start) / 60)
    env = {**os.environ, DEADLINE_ENV: str(int(deadline)), RESUME_ROOT_ENV: str(Path(results).resolve() / RESUME_DIR)}
    failed_rows: set[tuple[str, str, str, str]] = set()
    for state in order:
        if state.item.row in failed_rows:
            continue
        left = deadline - time.time()
        if left <= 0:
            outcome.stopped = True
            break
        if state.estimate_s is not None and state.estimate_s > left and not state.fit_to_progress:
            logger.info("skip %s: estimated %.1f min, %.1f min left", state.item.name, state.estimate_s / 60, left / 60)
            outcome.skipped.append(state.item.name)
            continue
        status = _run_item(state, spec, results, out, data_root, cache, env, deadline, start, outcome)
        if status == "stopped":
            outcome.stopped = True
            break
        if status == "failed":
            failed_rows.add(state.item.row)
    outcome.seconds = time.time() - start
    return outcome


def _run_item(state: ItemState, spec: SweepSpec, results: Path, out: Path, data_root: str | None,
              cache: str | None, env: dict[str, str], deadline: float, start: float,
              outcome: CampaignOutcome) -> str:
    """One item: run, export, clean its resume folder; returns ``done``, ``stopped`` or ``failed``."""
    item = state.item
    began = time.time()
    logger.info("start %s (%s, estimate %s min); %.1f min elapsed, %.1f min left", item.name, state.state,
                _minutes(state.estimate_s), (began - start) / 60, (deadline - began) / 60)
    log_path = Path(out) / "campaigns" / spec.name / f"{item.task_id}.log"
    code, stopped = run_child(item_command(item, spec, out, data_root, cache), env, deadline, log_path)
    if stopped or code == EXIT_DEADLINE:
        logger.info("stopped %s at the deadline (exit %d); its fit checkpoints stay in %s", item.name, code,
                    state.fit.resume or "-")
        _refresh(state, spec, results, data_root)
        return "stopped"
    if code != 0:
        logger.error("failed %s: exit status %d (log %s); going on with the next row", item.name, code, log_path)
        outcome.failed.append(item.name)
        return "failed"
    try:
        folder = export_item(item, spec, results, began, replace=(Path(results) / item.relative).exists())
    except ValueError as exc:
        logger.error("failed %s: export: %s", item.name, exc)
        outcome.failed.append(item.name)
        return "failed"
    if state.fit.resume is not None:
        shutil.rmtree(state.fit.resume, ignore_errors=True)
    state.state, state.reason, state.progress = "done", "", None
    outcome.ran.append(item.name)
    now = time.time()
    logger.info("done %s in %.1f min -> %s; %.1f min elapsed, %.1f min left", item.name, (now - began) / 60, folder,
                (now - start) / 60, (deadline - now) / 60)
    return "done"


def _refresh(state: ItemState, spec: SweepSpec, results: Path, data_root: str | None) -> None:
    """The state of an item the deadline stopped (in progress when it left checkpoints)."""
    with resume_root(results):
        fresh = item_state(spec, state.item, results, data_root, {})
    state.state, state.reason, state.progress = fresh.state, fresh.reason, fresh.progress


def summary_text(outcome: CampaignOutcome) -> str:
    a = outcome.assessment
    counts = ", ".join(f"{a.count(k)} {k}" for k in ("done", "in progress", "stale", "missing"))
    line = (f"campaign {a.spec.name}: {outcome.to_run} to run, {len(outcome.ran)} run now, {len(outcome.failed)} "
            f"failed, {len(outcome.skipped)} skipped (estimate over the time left); now {counts}; "
            f"{outcome.seconds / 60:.1f} min used")
    if outcome.stopped:
        line += "; stopped at the deadline (commit results/ and run the same command in the next session)"
    return "\n".join([line, *(f"failed: {name}" for name in outcome.failed)])


# ------------------------------------------------------------------------------------------- command
def default_results_root() -> Path:
    return default_results() or Path("results")


def _campaign_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    results = Path(args.results) if args.results else default_results_root()
    if args.status:
        print(status_table(assess(spec, results, args.data_root)))  # the command's result
        return 0
    if args.budget is None:
        raise ValueError("campaign: give --budget MINUTES (or --status)")
    budget = parse_budget(args.budget)
    outcome = run_campaign(spec, budget, results, Path(args.out), args.data_root, args.cache)
    print(summary_text(outcome))  # the result
    return 1 if outcome.failed else 0


def add_campaign_command(sub: argparse._SubParsersAction) -> None:
    """Register ``campaign`` (hooked into ``python -m benchmark`` by ``benchmark.cli.COMMAND_HOOKS``)."""
    campaign = sub.add_parser("campaign", help="run what a sweep spec still lacks in results/, within a budget",
                              description="Plan a sweep spec against the result bundles under --results, run the "
                              "missing, stale and in-progress items one `run` at a time (whole rows, in-progress "
                              "first, then shortest), export each bundle, and stop cleanly before --budget ends; fits "
                              "stopped at the deadline keep resume checkpoints in <results>/_resume/.")
    campaign.add_argument("spec", help="sweep spec TOML, e.g. benchmark/sweeps/table1-cpu.toml")
    campaign.add_argument("--budget", metavar="MINUTES", help="wall-clock minutes this campaign may use (more than "
                          f"the {RESERVE_S / 60:g}-minute reserve)")
    campaign.add_argument("--results", help="results root (default: the checkout's results/, else ./results)")
    campaign.add_argument("--status", action="store_true", help="run nothing: each item's state, estimate and fit "
                          "progress")
    campaign.add_argument("--out", default="runs", help="the runs' stage outputs (default: ./runs; not under --results)")
    campaign.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    add_cache_argument(campaign)
    campaign.set_defaults(func=_campaign_command)
