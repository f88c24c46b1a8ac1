"""CI regression gate: compare the newest benchmark runs with ``thresholds.toml``, or derive its bounds.

Thresholds are per profile, dataset, generator and machine class (``benchmark.machine.machine_class``): oneDNN
and TensorFlow pick other kernels per CPU class, and the ``ci`` profile's short trainings land on other numbers
on each, reproducibly within one. An entry holds

- ``min`` (SEG, TRA: higher is better) and ``max`` (FID, FVD: lower is better) bounds;
- ``max_ratio``: stage-time bounds as ratios to the yardstick, the total stage time of the ``real`` row of
  the same gate run (a machine twice as slow is twice as slow for both, and passes); the seconds a stage may
  take are ``max_ratio * yardstick + TIME_SLACK_S``;
- ``mean`` and ``sd``: the values over the seeds the bounds came from;
- ``provenance``: the commit, the digest of the resolved profile, the stage and realism-protocol versions,
  the date, the command, the seeds and their source runs, the CPU, and the method's constants.

Bounds come from the seed spread (``check --write-thresholds MIN_WIDTH``, at least ``--min-seeds`` seeds per
generator and class): ``mean -/+ max(k * SD, MIN_WIDTH * |mean|)``, the time ratios
``max(mean + k * SD, mean * (1 + time_margin))``. The file's header says why k and the widths are what they
are. A lower bound that would be <= 0 is refused when written and when read: it could never fail.

``check`` fails, one line each, on any violated bound, and on an entry it cannot trust:

- a stale entry (its profile digest or code versions are not today's): not compared with;
- a generator in the store with no entry, or a gated metric or stage time of a run with no bound;
- a run whose machine class has no entry of its own; ``--allow-unknown-class`` turns this into a warning and
  compares the run with the nearest known class (the one its values lie closest to, in SDs);
- a zero or negative lower bound.

An entry with ``min``/``max`` directly under the generator (no class level and no provenance) is a
hand-written bound for every class; the shipped file has none (``tests/test_gate.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shlex
import statistics
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from benchmark import experiment
from benchmark.config import (
    fraction,
    int_at_least,
    load_profile,
    non_negative_float,
    profile_label,
    stable_hash,
)
from benchmark.io import atomic_write_text
from benchmark.machine import machine_class
from benchmark.versions import version_tags

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.toml")
#: the gated metrics and the side a regression moves them to
GATED_METRICS: dict[str, str] = {"SEG": "min", "TRA": "min", "FID": "max", "FVD": "max", "TC": "min"}
TIME_SLACK_S = 10.0
#: the generator whose total stage time is the yardstick of every stage-time bound
YARDSTICK_GENERATOR = "real"
DEFAULT_K = 4.0
DEFAULT_MIN_SEEDS = 3
DEFAULT_TIME_MARGIN = 1.0
ENTRY_KEYS = ("min", "max", "max_ratio", "mean", "sd", "provenance")
BOUND_KINDS = ("min", "max", "max_ratio")
PROVENANCE_KEYS = ("commit", "profile_digest", "stage_versions", "protocol_version", "date", "command", "seeds",
                   "source_runs", "cpu", "k", "min_width", "time_margin")
REDERIVE = "CI_GATE_SEEDS='0 1 2' bash scripts/ci_gate.sh --write-thresholds 0.05"
#: the file's one table that is not a profile: machine classes no session could measure, each with ``why`` and
#: ``rederive`` (the command that would give it bounds). Written by hand: it states a fact, not a number;
#: ``--write-thresholds`` drops a class from it once that class has bounds.
NOT_MEASURED = "classes_not_measured"
NOT_MEASURED_FIELDS = ("why", "rederive")


@dataclass(frozen=True)
class Check:
    """One bound applied to one run's value, or one problem with an entry (``problem`` set: a failure whose
    ``note`` is the one line that says why). ``value`` None: the run or its metric is missing."""

    dataset: str
    generator: str
    metric: str
    kind: str  # "min" | "max" | "-" (a problem)
    bound: float | None
    value: float | None
    run_id: str | None
    machine: str = "any"  # the class whose bounds applied ("amd-avx2", "amd-avx2~nearest", "any")
    problem: str | None = None  # "STALE", "NO CLASS", "NO BOUNDS", "NO BOUND", "BAD BOUND", "NO YARDSTICK"
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.problem is not None or self.value is None or self.bound is None:
            return False
        return self.value >= self.bound if self.kind == "min" else self.value <= self.bound

    @property
    def status(self) -> str:
        if self.problem is not None:
            return self.problem
        if self.run_id is None:
            return "NO RUN"
        if self.value is None:
            return "MISSING"
        return "ok" if self.passed else "FAIL"


# ------------------------------------------------------------------------------------------- the file
def load_thresholds(path: Path = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """The thresholds tree, its whole structure checked (``check_thresholds``): a malformed file is a user's
    error (one line, exit 2), never a traceback that CI would read as a regression (exit 1)."""
    try:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: thresholds file is missing (create it with --write-thresholds MIN_WIDTH)") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a thresholds TOML file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text TOML file ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None
    check_thresholds(tree, path)
    return tree


def check_thresholds(tree: Mapping[str, Any], path: Path | str) -> None:
    """Refuse a thresholds tree that is not {profile: {dataset: {generator: entry | {machine_class: entry}}}}
    with entries of ``min``/``max``/``max_ratio``/``mean``/``sd`` tables of numbers and a ``provenance`` table;
    the line names the file and the entry (``[ci."Fluo-N2DH-GOWT1".bvdm.amd-avx2.min]``)."""
    def fail(where: list[str], problem: str) -> NoReturn:
        raise ValueError(f"{path}: [{'.'.join(where)}] {problem}")

    def need_table(node: Any, where: list[str], what: str) -> None:
        if not isinstance(node, Mapping):
            fail(where, f"must be a table of {what}, got {node!r}")

    for profile, datasets in tree.items():
        if profile == NOT_MEASURED:
            _check_not_measured(datasets, fail)
            continue
        need_table(datasets, [_toml_key(profile)], "datasets")
        for dataset, generators in datasets.items():
            need_table(generators, [_toml_key(profile), _toml_value(dataset)], "generators")
            for generator, node in generators.items():
                where = [_toml_key(profile), _toml_value(dataset), _toml_key(generator)]
                need_table(node, where, "machine classes or bounds (min, max)")
                if is_entry(node):
                    _check_entry(node, where, fail)
                    continue
                for machine, entry in node.items():
                    need_table(entry, [*where, _toml_key(machine)], f"bounds ({', '.join(ENTRY_KEYS)})")
                    _check_entry(entry, [*where, _toml_key(machine)], fail)


def _check_not_measured(table: Any, fail: Callable[[list[str], str], NoReturn]) -> None:
    """``[classes_not_measured.<class>]`` tables of exactly ``why`` and ``rederive``, both non-empty text."""
    if not isinstance(table, Mapping):
        fail([NOT_MEASURED], f"must be a table of machine classes, got {table!r}")
    for machine, item in table.items():
        where = [NOT_MEASURED, _toml_key(machine)]
        if not isinstance(item, Mapping) or set(item) != set(NOT_MEASURED_FIELDS):
            fail(where, f"must hold exactly {', '.join(NOT_MEASURED_FIELDS)}, got {item!r}")
        for key in NOT_MEASURED_FIELDS:
            if not isinstance(item[key], str) or not item[key].strip():
                fail([*where, key], f"must be non-empty text, got {item[key]!r}")


def _check_entry(entry: Mapping[str, Any], where: list[str], fail: Callable[[list[str], str], NoReturn]) -> None:
    """One entry: only the known keys; bound/mean/sd tables of finite numbers; a lower bound > 0."""
    for key, value in entry.items():
        if key not in ENTRY_KEYS:
            hint = " (a file from before bounds came from seeds: re-derive it)" if key in ("measured", "source_run") else ""
            fail(where, f"unknown key {key!r}; an entry holds {', '.join(ENTRY_KEYS)}{hint}")
        if not isinstance(value, Mapping):
            what = "fields" if key == "provenance" else "metric = number"
            fail([*where, key], f"must be a table of {what}, got {value!r}")
        if key == "provenance":
            unknown = sorted(set(value) - set(PROVENANCE_KEYS))
            if unknown:
                fail([*where, key], f"unknown field(s) {', '.join(unknown)}; provenance holds {', '.join(PROVENANCE_KEYS)}")
            continue
        for name, number in value.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                fail([*where, key], f"{name} must be a number, got {number!r}")
            if not math.isfinite(number):
                fail([*where, key], f"{name} must be a finite {'bound' if key in BOUND_KINDS else 'number'}, "
                     f"got {number!r}")
            if key == "min" and number <= 0:
                fail([*where, key], f"{name} = {number!r}: a lower bound <= 0 can never fail")


def is_entry(node: Mapping[str, Any]) -> bool:
    """A bounds entry rather than a table of machine classes."""
    return any(key in node for key in ENTRY_KEYS)


# ------------------------------------------------------------------------------------------- what is current
def profile_digest(profile: str) -> str:
    """The digest of the resolved profile (its ``extends`` chain merged): an entry derived under another
    profile is stale."""
    return stable_hash(load_profile(profile), length=16)


def current_versions() -> dict[str, str]:
    """Today's stage versions (JSON) and realism protocol version, as an entry's provenance records them."""
    tags = version_tags()
    return {"stage_versions": tags["stage_versions"], "protocol_version": tags["protocol_version"]}


def stale_reason(entry: Mapping[str, Any], digest: str, versions: Mapping[str, str]) -> str | None:
    """Why an entry's bounds no longer describe today's gate (None: current). A hand-written entry (no
    provenance) is never stale: it says nothing about what it came from."""
    provenance = entry.get("provenance")
    if provenance is None:
        return None
    if provenance.get("profile_digest") != digest:
        return (f"derived under profile digest {provenance.get('profile_digest')}, today's is {digest} "
                f"(on {provenance.get('commit', '?')[:10]})")
    for key, now in versions.items():
        if str(provenance.get(key)) != now:
            return f"derived with {key} {provenance.get(key)}, today's is {now}"
    return None


# ------------------------------------------------------------------------------------------- checking
@dataclass
class GateContext:
    """What every entry is judged against: today's profile digest and code versions, the yardstick seconds
    (the real row's total stage time in the same store; None without a real run), and the class policy."""

    profile: str
    digest: str
    versions: dict[str, str]
    yardstick: float | None
    allow_unknown_class: bool = False
    warnings: list[str] = field(default_factory=list)
    not_measured: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def check_runs(thresholds: Mapping[str, Any], profile: str, datasets: Sequence[str] | None = None,
               generators: Sequence[str] | None = None, allow_unknown_class: bool = False,
               digest: str | None = None) -> tuple[list[Check], list[str]]:
    """Every bound of ``profile`` (restricted to ``datasets`` and ``generators``) against the newest parent run
    per generator, under the entry of the class it ran on; returns the checks and the warnings."""
    from reports.runs import latest_per_generator, parent_runs

    section = thresholds.get(profile) if profile != NOT_MEASURED else None
    if not section:
        raise ValueError(f"thresholds: no section for profile {profile!r} (have: {', '.join(thresholds) or 'none'})")
    digest = digest or profile_digest(profile)
    checks: list[Check] = []
    warnings: list[str] = []
    for dataset in datasets or sorted(section):
        entries = section.get(dataset)
        if entries is None:
            raise ValueError(f"thresholds: no [{profile}.\"{dataset}\"] section")
        latest = latest_per_generator(parent_runs(dataset, profile))
        runs = {row["tags.generator"]: row for _, row in latest.iterrows()} if not latest.empty else {}
        yardstick_run = runs.get(YARDSTICK_GENERATOR)
        ctx = GateContext(profile, digest, current_versions(),
                          sum(_stage_times(yardstick_run).values()) if yardstick_run is not None else None,
                          allow_unknown_class, warnings, thresholds.get(NOT_MEASURED, {}))
        wanted = set(generators) if generators else set(entries) | set(runs)
        for generator in sorted(wanted):
            checks += check_generator(dataset, generator, entries.get(generator), runs.get(generator), ctx)
    return checks, warnings


def check_generator(dataset: str, generator: str, node: Mapping[str, Any] | None, run: Mapping[str, Any] | None,
                    ctx: GateContext) -> list[Check]:
    """The checks of one generator: its entry's problems, or every bound against its newest run."""
    run_id = str(run["run_id"]) if run is not None else None

    def problem(code: str, note: str, machine: str = "-") -> list[Check]:
        return [Check(dataset, generator, "-", "-", None, None, run_id, machine, code, f"{generator}: {note}")]

    if node is None:
        return problem("NO BOUNDS", f"no entry in the thresholds file: it is not gated (derive one: {REDERIVE})")
    if is_entry(node):
        return compare(dataset, generator, node, run, "any", ctx)
    if run is None:  # nothing ran: every current class's bounds are missing values
        current = {m: e for m, e in node.items() if stale_reason(e, ctx.digest, ctx.versions) is None}
        if not current:
            return problem("STALE", "every class's entry is stale and nothing ran")
        machine = sorted(current)[0]
        return compare(dataset, generator, current[machine], None, machine, ctx)
    machine = run_machine_class(run)
    entry = node.get(machine)
    why = stale_reason(entry, ctx.digest, ctx.versions) if entry is not None else None
    if entry is not None and why is None:
        return compare(dataset, generator, entry, run, machine, ctx)
    if why is not None:
        code, note = "STALE", f"the {machine} entry is stale, not compared with: {why}; re-derive: {REDERIVE}"
    else:  # a class the file names as not measured says why, and its own command
        item = ctx.not_measured.get(machine)
        reason = f": not measured yet, {item['why']}" if item else ""
        code, note = "NO CLASS", (f"no bounds for machine class {machine} (known: {', '.join(sorted(node))}){reason}; "
                                  f"derive them on such a machine: {item['rederive'] if item else REDERIVE}")
    current = {m: e for m, e in node.items() if stale_reason(e, ctx.digest, ctx.versions) is None}
    if not ctx.allow_unknown_class or not current:
        return problem(code, note, machine)
    nearest = min(sorted(current), key=lambda m: distance(run, current[m]))
    ctx.warnings.append(f"{note.split('; ')[0]}; compared with the nearest known class {nearest} "
                        f"(of {', '.join(sorted(current))}; --allow-unknown-class)")
    return compare(dataset, generator, current[nearest], run, f"{nearest}~nearest", ctx)


def compare(dataset: str, generator: str, entry: Mapping[str, Any], run: Mapping[str, Any] | None, machine: str,
            ctx: GateContext) -> list[Check]:
    """Every bound of ``entry`` against ``run``, plus a failure for each gated value the run has and the entry
    does not bound."""
    from reports.runs import metric

    run_id = str(run["run_id"]) if run is not None else None
    checks = []
    for kind in ("min", "max"):
        for name, bound in entry.get(kind, {}).items():
            value = metric(run, name) if run is not None else None
            checks.append(Check(dataset, generator, name, kind, float(bound), value, run_id, machine))
            if kind == "min" and bound <= 0:  # hand-made tree (the file's loader refuses these)
                checks[-1] = Check(dataset, generator, name, kind, float(bound), value, run_id, machine, "BAD BOUND",
                                   f"{generator}: min {name} = {bound}: a lower bound <= 0 can never fail")
    times = _stage_times(run) if run is not None else {}
    for name, ratio in entry.get("max_ratio", {}).items():
        if ctx.yardstick is None:
            checks.append(Check(dataset, generator, name, "max", None, times.get(name), run_id, machine,
                                "NO YARDSTICK", f"{generator}: {name} is bounded relative to the {YARDSTICK_GENERATOR} "
                                f"row's total stage time, and the store has no {YARDSTICK_GENERATOR} run"))
            continue
        checks.append(Check(dataset, generator, name, "max", float(ratio) * ctx.yardstick + TIME_SLACK_S,
                            times.get(name), run_id, machine))
    if run is not None:  # stage times must be bounded where the entry bounds any (every derived entry does)
        bounded = {c.metric for c in checks}
        values = {name: metric(run, name) for name in GATED_METRICS} | (times if "max_ratio" in entry else {})
        for name in sorted(n for n, v in values.items() if v is not None and n not in bounded):
            checks.append(Check(dataset, generator, name, "-", None, values[name], run_id, machine, "NO BOUND",
                                f"{generator}: the run has {name} = {values[name]:.4g} and the {machine} entry "
                                "has no bound for it"))
    return checks


def distance(run: Mapping[str, Any], entry: Mapping[str, Any]) -> float:
    """How far a run's gated values lie from an entry's seed means, in units of the entry's spread (its SD,
    at least 5 % of the mean): the nearest class of a run whose own class has no bounds."""
    from reports.runs import metric

    total, n = 0.0, 0
    for name, mean in entry.get("mean", {}).items():
        value = metric(run, name) if name in GATED_METRICS else None
        if value is None:
            continue
        scale = max(float(entry.get("sd", {}).get(name, 0.0)), 0.05 * abs(mean), 1e-9)
        total, n = total + abs(value - mean) / scale, n + 1
    return total / n if n else math.inf


def _stage_times(run: Mapping[str, Any] | None) -> dict[str, float]:
    """``time_<stage>_s`` -> seconds of a parent run."""
    from reports.runs import stage_times

    return {f"time_{stage}_s": seconds for stage, seconds in stage_times(run).items()} if run is not None else {}


def run_machine_class(run: Mapping[str, Any] | None) -> str:
    """The ``machine_class`` tag of a run; this machine's class for a run logged before the tag existed."""
    tag = run.get("tags.machine_class") if run is not None else None
    return tag if isinstance(tag, str) and tag else machine_class()


def format_checks(checks: Sequence[Check], failures_only: bool = False) -> str:
    """A fixed-width diff table (measured vs bound, relative difference), then one line per problem."""
    header = ("dataset", "generator", "machine", "metric", "bound", "measured", "diff", "status", "run")
    rows = []
    for c in checks:
        if failures_only and c.passed:
            continue
        op = ">=" if c.kind == "min" else "<=" if c.kind == "max" else ""
        bound = f"{op} {c.bound:.4g}" if c.bound is not None else "-"
        measured = f"{c.value:.4g}" if c.value is not None else "-"
        diff = (f"{(c.value - c.bound) / abs(c.bound) * 100:+.1f}%"
                if c.value is not None and c.bound and c.problem is None else "-")
        rows.append((c.dataset, c.generator, c.machine, c.metric, bound, measured, diff, c.status,
                     (c.run_id or "-")[:8]))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{c.status}: {c.dataset} {c.note}" for c in checks if c.problem is not None]
    return "\n".join(lines + ([""] + notes if notes else []))


# ------------------------------------------------------------------------------------------- deriving
@dataclass(frozen=True)
class Method:
    """How bounds are made from the seed spread (recorded in every entry's provenance)."""

    k: float = DEFAULT_K
    min_width: float = 0.05
    time_margin: float = DEFAULT_TIME_MARGIN
    min_seeds: int = DEFAULT_MIN_SEEDS


def bound_from_seeds(values: Sequence[float], kind: str, method: Method, what: str) -> tuple[float, float, float]:
    """(bound, mean, SD) of one metric over seeds: ``mean -/+ max(k * SD, min_width * |mean|)``; a lower bound
    that would be <= 0 is refused (it could never fail: the seed spread is too wide to gate on)."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    if kind == "max_ratio":
        return _round(max(mean + method.k * sd, mean * (1 + method.time_margin))), mean, sd
    half = max(method.k * sd, method.min_width * abs(mean))
    if kind == "max":
        return _round(max(mean, 0.0) + half), mean, sd  # a distance's round-off below 0 scales from 0
    bound = _round(mean - half)
    if bound <= 0:
        raise ValueError(f"{what}: the lower bound would be {bound:.4g} (mean {mean:.4g}, SD {sd:.4g} over "
                         f"{len(values)} seeds, k {method.k:g}): a bound <= 0 can never fail; the seed spread is "
                         "too wide to gate on (make the ci downstream less chaotic, or lower --k)")
    return bound, mean, sd


def derive_thresholds(profile: str, datasets: Sequence[str], method: Method, command: str,
                      digest: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Bounds from the newest run of every (generator, seed), per machine class:
    {dataset: {generator: {machine_class: entry}}}. Every generator and class needs ``method.min_seeds`` seeds
    and the real row of each of those seeds (the yardstick of its stage times)."""
    from reports.runs import latest_per_seed, parent_runs

    digest = digest or profile_digest(profile)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in datasets:
        runs = latest_per_seed(parent_runs(dataset, profile))
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for _, run in runs.iterrows():
            groups.setdefault((str(run["tags.generator"]), run_machine_class(run)), []).append(run)
        for (generator, machine), seed_runs in sorted(groups.items()):
            where = f"{profile}/{dataset}/{generator} on {machine}"
            yardsticks = {seed_of(r): groups.get((YARDSTICK_GENERATOR, machine), []) for r in seed_runs}
            entry = derive_entry(seed_runs, {s: _yardstick_of(rs, s) for s, rs in yardsticks.items()}, method,
                                 where)
            entry["provenance"] = provenance(seed_runs, method, command, digest)
            out.setdefault(dataset, {}).setdefault(generator, {})[machine] = entry
    return out


def seed_of(run: Mapping[str, Any]) -> int:
    return int(float(run.get("params.seed") or 0))


def _yardstick_of(real_runs: Sequence[Mapping[str, Any]], seed: int) -> float | None:
    same = [r for r in real_runs if seed_of(r) == seed]
    return sum(_stage_times(same[0]).values()) if same else None


def derive_entry(seed_runs: Sequence[Mapping[str, Any]], yardsticks: Mapping[int, float | None], method: Method,
                 where: str) -> dict[str, Any]:
    """One entry's bounds, means and SDs from one generator's runs (one per seed)."""
    from reports.runs import metric

    seeds = sorted(seed_of(r) for r in seed_runs)
    if len(seeds) < method.min_seeds:
        raise ValueError(f"{where}: {len(seeds)} seed(s) ({', '.join(map(str, seeds))}) in the store; bounds need "
                         f">= {method.min_seeds} (run: {REDERIVE}, or pass --min-seeds)")
    missing = [s for s, y in yardsticks.items() if not y]
    if missing:
        raise ValueError(f"{where}: no {YARDSTICK_GENERATOR} run of seed(s) {', '.join(map(str, sorted(missing)))} "
                         "to measure its stage times against")
    entry: dict[str, Any] = {"min": {}, "max": {}, "max_ratio": {}, "mean": {}, "sd": {}}
    for name, kind in GATED_METRICS.items():
        values = [metric(r, name) for r in seed_runs]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"{where}: {name} is missing from some seeds' runs")
        entry[kind][name], entry["mean"][name], entry["sd"][name] = bound_from_seeds(values, kind, method,
                                                                                    f"{where}: {name}")
    times = [(_stage_times(r), yardsticks[seed_of(r)]) for r in seed_runs]
    for name in sorted(set.intersection(*(set(t) for t, _ in times))):
        ratios = [t[name] / yardstick for t, yardstick in times]
        entry["max_ratio"][name], entry["mean"][name], entry["sd"][name] = bound_from_seeds(
            ratios, "max_ratio", method, f"{where}: {name}")
    entry["mean"] = {k: _round(v, 6) for k, v in entry["mean"].items()}
    entry["sd"] = {k: _round(v, 6) for k, v in entry["sd"].items()}
    return {k: v for k, v in entry.items() if v}


def provenance(seed_runs: Sequence[Mapping[str, Any]], method: Method, command: str, digest: str) -> dict[str, Any]:
    """Where an entry came from, as data: a later ``check`` refuses it when the profile or code moved on."""
    commits = sorted({str(r.get("tags.git_commit") or "unknown") for r in seed_runs})
    cpus = sorted({str(r.get("tags.cpu") or "unknown") for r in seed_runs})
    ordered = sorted(seed_runs, key=seed_of)
    return {"commit": ", ".join(commits), "profile_digest": digest, **current_versions(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "seeds": [seed_of(r) for r in ordered], "source_runs": [str(r["run_id"]) for r in ordered],
            "cpu": "; ".join(cpus), "k": method.k, "min_width": method.min_width,
            "time_margin": method.time_margin}


def _round(value: float, digits: int = 4) -> float:
    """``digits`` significant digits (readable TOML, no false precision)."""
    return float(f"{value:.{digits}g}") if value and math.isfinite(value) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, int) else repr(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


HEADER = """CI regression gate thresholds (python -m benchmark check), per profile, dataset, generator and machine class.

How the bounds are made (benchmark/gate.py, `check --write-thresholds MIN_WIDTH`): from the newest run of each
of >= 3 seeds of every generator on one machine class,
  SEG, TRA, TC (min):  mean - max(k * SD, MIN_WIDTH * mean)   (TC: texture carry-over, benchmark.metrics.temporal)
  FID, FVD (max):      mean + max(k * SD, MIN_WIDTH * mean)
  stage times:         a ratio to the real row's total stage time in the same gate run,
                       max_ratio = max(mean + k * SD, mean * (1 + time_margin));
                       allowed s = max_ratio * yardstick + 10 s.
Why k = 4: the gate re-runs seed 0, which reproduces digit for digit on one machine of a class; the bound has to
absorb what moves a result between machines of one class (another CPU family, another oneDNN kernel), and
the seed spread is the measure of that sensitivity we have. With the SD taken from 3 seeds (2 degrees of
freedom), mean - 4 SD is a one-sided t-prediction bound for one further draw at about 96 % (t = 4/sqrt(4/3)
= 3.46 on 2 df): a draw as different as a new seed fails about 1 time in 27 per bound.
Why a minimum width: with 3 seeds the SD can come out near 0 by chance (identical values), which would make a
bound that any round-off fails; MIN_WIDTH * mean is the least relative move the gate treats as a regression.
Why the time margin (x2): stage times move with the load on a shared machine far more than with the seed.
A lower bound <= 0 is never written: it could not fail. [classes_not_measured] (at the end, written by hand)
names the classes no session could measure yet, why, and the command that would give them bounds; a run on such
a class fails as NO CLASS with that line (or, with --allow-unknown-class, meets the nearest measured class).
Each entry's provenance (commit, profile digest, code versions, seeds, source runs, command) is data; `check`
refuses an entry whose profile digest or code versions are not today's. Sections of other profiles, datasets,
generators and classes are kept when one is written."""


def render_thresholds(tree: Mapping[str, Any], header: str = HEADER) -> str:
    """TOML text for the thresholds tree (quoted keys; the dataset key always quoted, since it holds dots)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(path: str, node: Mapping[str, Any], blank: bool) -> None:
        scalars = [(k, v) for k, v in node.items() if not isinstance(v, Mapping)]
        if scalars:
            lines.extend(["", f"[{path}]"] if blank else [f"[{path}]"])
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars)
        elif blank and is_entry(node):
            lines.append("")
        for kind in ENTRY_KEYS:
            if node.get(kind):
                table(f"{path}.{kind}", node[kind], blank=False)
        for key in sorted(k for k, v in node.items() if isinstance(v, Mapping) and k not in ENTRY_KEYS):
            table(f"{path}.{_toml_key(key)}", node[key], blank=True)

    for profile in sorted(p for p in tree if p != NOT_MEASURED):
        for dataset in sorted(tree[profile]):
            for generator in sorted(tree[profile][dataset]):
                path = f"{_toml_key(profile)}.{_toml_value(dataset)}.{_toml_key(generator)}"
                table(path, tree[profile][dataset][generator], blank=True)
    for machine, item in sorted(tree.get(NOT_MEASURED, {}).items()):
        lines.extend(["", f"[{NOT_MEASURED}.{_toml_key(machine)}]"])
        lines.extend(f"{key} = {_toml_value(item[key])}" for key in NOT_MEASURED_FIELDS)
    return "\n".join(lines) + "\n"


def write_thresholds(path: Path, profile: str, derived: Mapping[str, Any]) -> Path:
    """Merge derived entries into ``path`` (other profiles, datasets, generators and classes kept); atomic."""
    tree: dict[str, Any] = load_thresholds(path) if Path(path).is_file() else {}
    for dataset, generators in derived.items():
        known = tree.setdefault(profile, {}).setdefault(dataset, {})
        for generator, classes in generators.items():
            if is_entry(known.get(generator, {})):
                known[generator] = {}  # a hand-written entry for every class is replaced by per-class ones
            known.setdefault(generator, {}).update(classes)
            for machine in classes:  # measured now
                tree.get(NOT_MEASURED, {}).pop(machine, None)
    if NOT_MEASURED in tree and not tree[NOT_MEASURED]:
        del tree[NOT_MEASURED]
    return atomic_write_text(Path(path), render_thresholds(tree))


def known_datasets() -> list[str]:
    """Datasets with a ``synthvid/<dataset>`` experiment in the store."""
    import mlflow


    experiment.configure()
    prefix = f"{experiment.EXPERIMENT_PREFIX}/"
    return sorted(e.name[len(prefix):] for e in mlflow.search_experiments() if e.name.startswith(prefix))


# ------------------------------------------------------------------------------------------- CLI
def _derive_command_line(args: argparse.Namespace) -> str:
    """The command that wrote an entry, as a user would re-type it."""
    parts = ["python", "-m", "benchmark", "check", "--profile", args.profile_source]
    for dataset in args.dataset or []:
        parts += ["--dataset", dataset]
    parts += ["--write-thresholds", f"{args.write_thresholds:g}", "--k", f"{args.k:g}", "--min-seeds",
              str(args.min_seeds), "--time-margin", f"{args.time_margin:g}"]
    return shlex.join(parts)


def _check_command(args: argparse.Namespace) -> int:
    path = Path(args.thresholds)
    if args.write_thresholds is not None:
        if path.exists():  # a malformed file it would merge into: one line now, before the store is read
            load_thresholds(path)
        datasets = args.dataset or known_datasets()
        method = Method(args.k, args.write_thresholds, args.time_margin, args.min_seeds)
        derived = derive_thresholds(args.profile, datasets, method, _derive_command_line(args),
                                    profile_digest(args.profile_source))
        if not derived:
            raise ValueError(f"no finished runs of profile {args.profile!r} for {', '.join(datasets) or 'any dataset'}")
        write_thresholds(path, args.profile, derived)
        written = [f"{dataset} {generator} ({', '.join(classes)})" for dataset, generators in derived.items()
                   for generator, classes in generators.items()]
        logger.info("wrote %s: %s", path, "; ".join(written))
        return 0
    checks, warnings = check_runs(load_thresholds(path), args.profile, args.dataset, args.generator,
                                  args.allow_unknown_class, profile_digest(args.profile_source))
    failed = [c for c in checks if not c.passed]
    # the gate's result: the table on stdout, the verdict on stdout (passed) or stderr (FAILED), whatever -q says
    print(format_checks(checks, failures_only=args.failures_only))
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if failed:
        print(f"\ngate FAILED: {len(failed)} of {len(checks)} checks violated, missing or refused ({path})",
              file=sys.stderr)
        return 1
    print(f"\ngate passed: {len(checks)} bounds ({path})")
    return 0


def _profile_argument(text: str) -> str:
    """``--profile``: a shipped profile's name or a TOML file; its resolved text must load (the digest)."""
    try:
        load_profile(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _ProfileAction(argparse.Action):
    """``--profile`` keeps both what was given (``profile_source``: the digest is of its resolved text) and
    the label runs are tagged with (``profile``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.profile_source, namespace.profile = values, profile_label(values)


def add_check_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="CI regression gate: newest runs vs thresholds.toml (exit 1 on regression)",
                           description=__doc__.splitlines()[0])
    check.add_argument("--profile", action=_ProfileAction, default="ci", type=_profile_argument,
                       help="the profile's name, or the TOML file `run --profile` was given (default: ci)")
    check.add_argument("--dataset", action="append", help="restrict to this dataset (repeatable; default: all "
                       "in the thresholds file, or all in the store with --write-thresholds)")
    check.add_argument("--generator", action="append", help="restrict the check to this generator (repeatable; "
                       "default: every generator in the file or the store)")
    check.add_argument("--thresholds", default=str(DEFAULT_THRESHOLDS), help="TOML file (default: %(default)s)")
    check.add_argument("--allow-unknown-class", action="store_true",
                       help="a run whose machine class has no current bounds is compared with the nearest known "
                       "class (a warning) instead of failing")
    check.add_argument("--write-thresholds", type=fraction, metavar="MIN_WIDTH",
                       help="instead of checking, derive bounds from the newest run of every seed (mean -/+ "
                       "max(k SD, MIN_WIDTH * mean), e.g. 0.05) and write them into --thresholds")
    check.add_argument("--k", type=non_negative_float, default=DEFAULT_K,
                       help="with --write-thresholds: SDs of the seed spread between mean and bound (default "
                       "%(default)s)")
    check.add_argument("--min-seeds", type=int_at_least(1, "a seed count"), default=DEFAULT_MIN_SEEDS,
                       help="with --write-thresholds: seeds each generator needs (default %(default)s)")
    check.add_argument("--time-margin", type=non_negative_float, default=DEFAULT_TIME_MARGIN,
                       help="with --write-thresholds: least relative margin of stage-time ratios (default 1.0 = "
                       f"2x; allowed seconds add {TIME_SLACK_S:g} s)")
    check.add_argument("--failures-only", action="store_true", help="print only violated bounds")
    check.set_defaults(func=_check_command, profile_source="ci")
