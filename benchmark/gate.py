"""CI regression gate: compare the newest benchmark runs with ``thresholds.toml``.

Thresholds are per profile, dataset, generator and machine class: ``min`` bounds (SEG, TRA: higher is
better), ``max`` bounds (FID, FVD: lower is better; ``time_<stage>_s`` stage wall times). They are derived
from measured runs with a stated margin (``--write-thresholds MARGIN``): ``min = measured * (1 - MARGIN)``,
``max = measured * (1 + MARGIN)``, stage times ``measured * (1 + TIME_MARGIN) + TIME_SLACK_S``.

Why per machine class (``benchmark.machine.machine_class``, e.g. ``intel-amx``, ``amd-avx512_bf16``):
oneDNN and TensorFlow choose different kernels per CPU class, and the ``ci`` profile's short StarDist
and GAN trainings land on different numbers on each (GOWT1 window, real-trained SEG 0.27 on Intel AMX,
0.53 on AMD), while staying digit-for-digit reproducible within a class. A run is checked against the
bounds of the class it ran on (its ``machine_class`` tag); a class with no bounds of its own is checked
against the loosest bound of the known classes, and the table says so. A generator entry with ``min`` /
``max`` directly under it (no class level) applies to every class.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from benchmark.config import fraction, non_negative_float, profile_label

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.toml")
MIN_METRICS = ("SEG", "TRA")
MAX_METRICS = ("FID", "FVD")
TIME_SLACK_S = 10.0


@dataclass(frozen=True)
class Check:
    """One bound applied to one run's metric (``value`` None: the run or the metric is missing)."""

    dataset: str
    generator: str
    metric: str
    kind: str  # "min" | "max"
    bound: float
    value: float | None
    run_id: str | None
    machine: str = "any"  # the class whose bounds applied; "loosest" when the run's class had none

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.bound if self.kind == "min" else self.value <= self.bound

    @property
    def status(self) -> str:
        if self.run_id is None:
            return "NO RUN"
        if self.value is None:
            return "MISSING"
        return "ok" if self.passed else "FAIL"


ENTRY_KEYS = ("min", "max", "measured", "source_run")


def load_thresholds(path: Path = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """The thresholds tree, its whole structure checked (``check_thresholds``): a malformed file is a user's
    error (one line, exit 2), never a traceback that CI would read as a regression (exit 1)."""
    try:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: thresholds file is missing (create it with --write-thresholds MARGIN)") from None
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
    with entries of ``min``/``max``/``measured`` tables of numbers and a ``source_run`` string; the line names
    the file and the entry (``[ci."Fluo-N2DH-GOWT1".bvdm.min]``)."""
    def fail(where: list[str], problem: str) -> NoReturn:
        raise ValueError(f"{path}: [{'.'.join(where)}] {problem}")

    def need_table(node: Any, where: list[str], what: str) -> None:
        if not isinstance(node, Mapping):
            fail(where, f"must be a table of {what}, got {node!r}")

    for profile, datasets in tree.items():
        need_table(datasets, [_toml_key(profile)], "datasets")
        for dataset, generators in datasets.items():
            need_table(generators, [_toml_key(profile), _toml_value(dataset)], "generators")
            for generator, node in generators.items():
                where = [_toml_key(profile), _toml_value(dataset), _toml_key(generator)]
                need_table(node, where, "machine classes or bounds (min, max)")
                if _is_entry(node):
                    _check_entry(node, where, fail)
                    continue
                for machine, entry in node.items():
                    need_table(entry, [*where, _toml_key(machine)], "bounds (min, max, measured, source_run)")
                    _check_entry(entry, [*where, _toml_key(machine)], fail)


def _check_entry(entry: Mapping[str, Any], where: list[str], fail: Callable[[list[str], str], NoReturn]) -> None:
    """One bounds entry: only the known keys; min/max/measured tables of numbers; source_run a string."""
    for key, value in entry.items():
        if key not in ENTRY_KEYS:
            fail(where, f"unknown key {key!r}; an entry holds {', '.join(ENTRY_KEYS)}")
        if key == "source_run":
            if not isinstance(value, str):
                fail([*where, key], f"must be a run id string, got {value!r}")
            continue
        if not isinstance(value, Mapping):
            fail([*where, key], f"must be a table of metric = number, got {value!r}")
        for name, bound in value.items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                fail([*where, key], f"{name} must be a number, got {bound!r}")
            if key != "measured" and not math.isfinite(bound):
                fail([*where, key], f"{name} must be a finite bound, got {bound!r}")


def _bounds(entry: Mapping[str, Any], where: str) -> Iterable[tuple[str, str, float]]:
    for kind in ("min", "max"):
        for name, bound in entry.get(kind, {}).items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise ValueError(f"{where}.{kind}.{name}: bound must be a number, got {bound!r}")
            yield kind, name, float(bound)


def _is_entry(node: Mapping[str, Any]) -> bool:
    """A bounds entry (``min``/``max``/``measured``/``source_run`` keys) rather than a table of classes."""
    return any(key in node for key in ("min", "max", "measured", "source_run"))


def bounds_for_class(generator_entry: Mapping[str, Any], machine: str) -> tuple[dict[str, Any], str]:
    """The bounds entry for ``machine`` and the name of what applied: the class itself, ``any`` (an entry
    without a class level) or ``loosest`` (the class has none: the weakest bound of every known class, so
    an unmeasured machine is held to what every measured one met)."""
    if _is_entry(generator_entry):
        return dict(generator_entry), "any"
    if machine in generator_entry:
        return dict(generator_entry[machine]), machine
    classes = [e for e in generator_entry.values() if isinstance(e, Mapping)]
    loosest: dict[str, Any] = {"min": {}, "max": {}}
    for kind, pick in (("min", min), ("max", max)):
        names = set.intersection(*(set(e.get(kind, {})) for e in classes)) if classes else set()
        loosest[kind] = {name: pick(e[kind][name] for e in classes) for name in sorted(names)}
    return loosest, "loosest"


def run_machine_class(run: Mapping[str, Any] | None) -> str:
    """The ``machine_class`` tag of a run; this machine's class for a run logged before the tag existed."""
    from benchmark.machine import machine_class

    tag = run.get("tags.machine_class") if run is not None else None
    return tag if isinstance(tag, str) and tag else machine_class()


def check_runs(thresholds: Mapping[str, Any], profile: str, datasets: Sequence[str] | None = None) -> list[Check]:
    """Every bound of ``profile`` (restricted to ``datasets``) against the newest parent run per generator,
    taken from the entry of the machine class that run ran on."""
    from reports.runs import latest_per_generator, metric, parent_runs

    section = thresholds.get(profile)
    if not section:
        raise ValueError(f"thresholds: no section for profile {profile!r} (have: {', '.join(thresholds) or 'none'})")
    checks = []
    for dataset in datasets or sorted(section):
        generators = section.get(dataset)
        if generators is None:
            raise ValueError(f"thresholds: no [{profile}.\"{dataset}\"] section")
        latest = latest_per_generator(parent_runs(dataset, profile))
        by_generator = {row["tags.generator"]: row for _, row in latest.iterrows()} if not latest.empty else {}
        for generator in sorted(generators):
            run = by_generator.get(generator)
            entry, applied = bounds_for_class(generators[generator], run_machine_class(run))
            for kind, name, bound in _bounds(entry, f"{profile}.{dataset}.{generator}.{applied}"):
                value = metric(run, name) if run is not None else None
                checks.append(Check(dataset, generator, name, kind, bound, value,
                                    str(run["run_id"]) if run is not None else None, applied))
    return checks


def format_checks(checks: Sequence[Check], failures_only: bool = False) -> str:
    """A fixed-width diff table: measured vs bound and the relative difference."""
    header = ("dataset", "generator", "machine", "metric", "bound", "measured", "diff", "status", "run")
    rows = []
    for c in checks:
        if failures_only and c.passed:
            continue
        op = ">=" if c.kind == "min" else "<="
        measured = f"{c.value:.4g}" if c.value is not None else "-"
        diff = f"{(c.value - c.bound) / abs(c.bound) * 100:+.1f}%" if c.value is not None and c.bound else "-"
        rows.append((c.dataset, c.generator, c.machine, c.metric, f"{op} {c.bound:.4g}", measured, diff, c.status,
                     (c.run_id or "-")[:8]))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- deriving
def derive_thresholds(profile: str, datasets: Sequence[str], margin: float,
                      time_margin: float) -> dict[str, dict[str, dict[str, Any]]]:
    """Bounds from the newest run per generator, under the machine class it ran on:
    {dataset: {generator: {machine_class: {min, max, measured, source_run}}}}."""
    from reports.runs import latest_per_generator, metric, parent_runs, stage_times

    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in datasets:
        latest = latest_per_generator(parent_runs(dataset, profile))
        for _, run in latest.iterrows():
            entry: dict[str, Any] = {"source_run": str(run["run_id"]), "min": {}, "max": {}, "measured": {}}
            for name in MIN_METRICS + MAX_METRICS:
                value = metric(run, name)
                if value is None:
                    continue
                entry["measured"][name] = value
                if name in MIN_METRICS:
                    entry["min"][name] = _round(value * (1 - margin))
                else:
                    # FID/FVD are distances (>= 0): a negative one is the round-off of identical feature sets,
                    # and a bound scaled from it would lie below the value it came from
                    entry["max"][name] = _round(max(value, 0.0) * (1 + margin))
            for stage, seconds in stage_times(run).items():
                entry["measured"][f"time_{stage}_s"] = seconds
                entry["max"][f"time_{stage}_s"] = _round(seconds * (1 + time_margin) + TIME_SLACK_S)
            out.setdefault(dataset, {})[str(run["tags.generator"])] = {run_machine_class(run): entry}
    return out


def _round(value: float) -> float:
    """Four significant digits (readable TOML, no false precision)."""
    return float(f"{value:.4g}") if value and math.isfinite(value) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(float(value))
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def render_thresholds(tree: Mapping[str, Any], header: str) -> str:
    """TOML text for {profile: {dataset: {generator: {[machine_class:] {min, max, measured, source_run}}}}}
    (quoted keys; the dataset key always quoted, since dataset names hold dots)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(path: str, node: Mapping[str, Any], blank: bool) -> None:
        scalars = [(k, v) for k, v in node.items() if not isinstance(v, Mapping)]
        if scalars or _is_entry(node):
            lines.extend(["", f"[{path}]"] if blank else [f"[{path}]"])
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars)
        for kind in ("min", "max", "measured"):
            if node.get(kind):
                table(f"{path}.{kind}", node[kind], blank=False)
        for key in sorted(k for k, v in node.items() if isinstance(v, Mapping) and k not in ("min", "max", "measured")):
            table(f"{path}.{_toml_key(key)}", node[key], blank=True)

    for profile in sorted(tree):
        for dataset in sorted(tree[profile]):
            for generator in sorted(tree[profile][dataset]):
                path = f"{_toml_key(profile)}.{_toml_value(dataset)}.{_toml_key(generator)}"
                table(path, tree[profile][dataset][generator], blank=True)
    return "\n".join(lines) + "\n"


def write_thresholds(path: Path, profile: str, derived: Mapping[str, Any], margin: float, time_margin: float) -> Path:
    """Merge derived bounds into ``path`` (other profiles, datasets and generators kept); atomic write."""
    from benchmark.io import atomic_write_text

    tree: dict[str, Any] = load_thresholds(path) if Path(path).is_file() else {}
    for dataset, generators in derived.items():  # a gate run of some generators keeps the others' bounds
        known = tree.setdefault(profile, {}).setdefault(dataset, {})
        for generator, classes in generators.items():  # ... and of the other machine classes
            if _is_entry(known.get(generator, {})):
                known[generator] = {}  # an entry for every class is replaced by per-class ones
            known.setdefault(generator, {}).update(classes)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"CI regression gate thresholds (python -m benchmark check). Written {stamp} by\n"
              f"`python -m benchmark check --profile {profile} --write-thresholds {margin} --time-margin {time_margin}`\n"
              f"from the newest measured run per generator ([...measured] and source_run):\n"
              f"min = measured * (1 - {margin}) for SEG/TRA; max = measured * (1 + {margin}) for FID/FVD;\n"
              f"stage times max = measured * (1 + {time_margin}) + {TIME_SLACK_S:g} s.\n"
              "Sections of other profiles, datasets, generators and machine classes were kept as they were.")
    return atomic_write_text(Path(path), render_thresholds(tree, header))


def known_datasets() -> list[str]:
    """Datasets with a ``synthvid/<dataset>`` experiment in the store."""
    import mlflow

    from benchmark import experiment

    experiment.configure()
    prefix = f"{experiment.EXPERIMENT_PREFIX}/"
    return sorted(e.name[len(prefix):] for e in mlflow.search_experiments() if e.name.startswith(prefix))


# ------------------------------------------------------------------------------------------- CLI
def _check_command(args: argparse.Namespace) -> int:
    path = Path(args.thresholds)
    if args.write_thresholds is not None:
        if path.exists():  # a malformed file it would merge into: one line now, before the store is read
            load_thresholds(path)
        datasets = args.dataset or known_datasets()
        derived = derive_thresholds(args.profile, datasets, args.write_thresholds, args.time_margin)
        if not derived:
            raise ValueError(f"no finished runs of profile {args.profile!r} for {', '.join(datasets) or 'any dataset'}")
        write_thresholds(path, args.profile, derived, args.write_thresholds, args.time_margin)
        logger.info("wrote %s: %d generator(s) in %s", path, sum(len(g) for g in derived.values()),
                    ", ".join(derived))
        return 0
    checks = check_runs(load_thresholds(path), args.profile, args.dataset)
    failed = [c for c in checks if not c.passed]
    # the gate's result: the table on stdout, the verdict on stdout (passed) or stderr (FAILED), whatever -q says
    print(format_checks(checks, failures_only=args.failures_only))
    if failed:
        print(f"\ngate FAILED: {len(failed)} of {len(checks)} bounds violated or missing ({path})", file=sys.stderr)
        return 1
    print(f"\ngate passed: {len(checks)} bounds ({path})")
    return 0


def add_check_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="CI regression gate: newest runs vs thresholds.toml (exit 1 on regression)",
                           description=__doc__.splitlines()[0])
    check.add_argument("--profile", default="ci", type=profile_label,
                       help="the profile's name, or the TOML file `run --profile` was given (default: ci)")
    check.add_argument("--dataset", action="append", help="restrict to this dataset (repeatable; default: all "
                       "in the thresholds file, or all in the store with --write-thresholds)")
    check.add_argument("--thresholds", default=str(DEFAULT_THRESHOLDS), help="TOML file (default: %(default)s)")
    check.add_argument("--write-thresholds", type=fraction, metavar="MARGIN",
                       help="instead of checking, derive bounds from the newest runs with this relative margin "
                       "(e.g. 0.2) and write them into --thresholds")
    check.add_argument("--time-margin", type=non_negative_float, default=1.0,
                       help="relative margin for stage times with --write-thresholds (default 1.0 = 2x, plus "
                       f"{TIME_SLACK_S:g} s)")
    check.add_argument("--failures-only", action="store_true", help="print only violated bounds")
    check.set_defaults(func=_check_command)
