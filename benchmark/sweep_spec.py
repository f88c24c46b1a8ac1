"""A sweep spec (TOML: name, profile, generators, seeds, datasets, an optional grid and report kind), loaded
and checked whole: every problem is one line naming the file (``benchmark.sweep`` runs it)."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from benchmark.config import MAX_SEED, load_profile, profile_label, stable_hash
from benchmark.datasets import DATASETS
from generators.registry import available_generators

#: the example specs shipped with the package
SWEEPS_DIR = Path(__file__).parent / "sweeps"
SPEC_KEYS = ("name", "description", "profile", "generators", "seeds", "datasets", "grid", "report")
#: the entry-point group of report kinds (``report = "<kind>"``: ``reports.sweep:table2_report`` is ``table2``);
#: the orchestration finds a report by kind, never by importing the reports layer
REPORT_GROUP = "synthvid.reports"
REQUIRED_KEYS = ("profile", "generators", "seeds", "datasets")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")



@dataclass(frozen=True)
class SweepSpec:
    """A loaded, checked spec. ``grid`` holds the expanded points (``({},)``: no grid)."""

    path: Path
    name: str
    profile: str
    generators: tuple[str, ...]
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    grid: tuple[dict[str, Any], ...] = ({},)
    description: str = ""
    report: str | None = None  # a report kind (REPORT_GROUP) printed when the sweep ends; not part of the digest

    @property
    def digest(self) -> str:
        """Names the sweep's records and its MLflow parent: the same spec content is the same sweep (comments
        and file location aside), so running it again resumes it."""
        return stable_hash(self.name, self.profile, self.generators, self.seeds, self.datasets, self.grid)

    @property
    def has_grid(self) -> bool:
        return self.grid != ({},)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "profile": self.profile, "generators": list(self.generators),
                "seeds": list(self.seeds), "datasets": list(self.datasets), "grid": list(self.grid),
                "description": self.description, "report": self.report, "spec": str(self.path),
                "digest": self.digest}


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; every problem is one ``ValueError`` line naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: sweep spec not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the sweep spec ({getattr(exc, 'strerror', None) or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(SPEC_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (a spec needs {', '.join(REQUIRED_KEYS)})")
    name = _text(path, raw, "name", path.stem)
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    profile = _text(path, raw, "profile")
    if Path(profile).suffix:  # a TOML path: relative to the spec, absolute for the workers
        profile = str((path.parent / profile).resolve())
    try:
        load_profile(profile)
    except ValueError as exc:
        raise ValueError(f"{path}: profile: {exc}") from None
    return SweepSpec(path=path.resolve(), name=name, profile=profile,
                     generators=_names(path, raw, "generators", available_generators()),
                     seeds=_seeds(path, raw["seeds"]), datasets=_names(path, raw, "datasets", sorted(DATASETS)),
                     grid=grid_points(path, raw.get("grid")), description=_text(path, raw, "description", ""),
                     report=_report_kind(path, raw.get("report")))


def report_kinds() -> dict[str, Any]:
    """The installed report kinds: name -> entry point (loaded only when a sweep ends)."""
    return {ep.name: ep for ep in entry_points(group=REPORT_GROUP)}


def _report_kind(path: Path, value: Any) -> str | None:
    if value is None:
        return None
    known = report_kinds()
    if value not in known:
        raise ValueError(f"{path}: report {value!r} is not a report kind (installed: {', '.join(sorted(known)) or 'none'}; "
                         f"entry point group {REPORT_GROUP})")
    return value


def write_report(spec: SweepSpec, out_dir: Path) -> list[str]:
    """The spec's report kind for each dataset (its files under ``out_dir``), as Markdown texts to print."""
    if spec.report is None:
        return []
    writer = report_kinds()[spec.report].load()
    return [writer(dataset, profile_label(spec.profile), out_dir) for dataset in spec.datasets]


def _text(path: Path, raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (not value and default is None):
        raise ValueError(f"{path}: {key} must be a non-empty string, got {value!r}")
    return value


def _list(path: Path, value: Any, key: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}: {key} must be a non-empty list, got {value!r}")
    return value


def _names(path: Path, raw: Mapping[str, Any], key: str, known: Sequence[str]) -> tuple[str, ...]:
    values = _list(path, raw[key], key)
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"{path}: {key} must hold strings, got {value!r}")
        if value not in known:
            raise ValueError(f"{path}: unknown {key[:-1]} {value!r} in {key}; known: {', '.join(known)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{path}: {key} lists a name twice: {values}")
    return tuple(values)


def _seeds(path: Path, value: Any) -> tuple[int, ...]:
    seeds = _list(path, value, "seeds")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"{path}: seeds must be integers in [0, {MAX_SEED}], got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds lists a seed twice: {seeds}")
    return tuple(seeds)


def grid_points(path: Path, grid: Any) -> tuple[dict[str, Any], ...]:
    """``[grid]`` (one table of lists: every combination) or ``[[grid]]`` (several: the union), as the distinct
    points in first-seen order; ``({},)`` when there is no grid."""
    if grid is None:
        return ({},)
    tables = grid if isinstance(grid, list) else [grid]
    if not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: grid must be a table of parameter lists or an array of such tables, got {grid!r}")
    points: dict[str, dict[str, Any]] = {}
    for table in map(_dotted, tables):
        if not table:
            raise ValueError(f"{path}: a [grid] table is empty")
        for key, values in table.items():
            _list(path, values, f"grid.{key}")
        for combination in itertools.product(*table.values()):
            point = dict(zip(table, combination, strict=True))
            points.setdefault(json.dumps(point, sort_keys=True), point)
    return tuple(points.values())


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A grid table with its sub-tables as dotted keys: TOML reads ``sampling.t_first = [...]`` as a nested
    table, and a grid point names that field the way ``--param sampling.t_first=...`` does."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        out.update(_dotted(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def point_text(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in point.items())


