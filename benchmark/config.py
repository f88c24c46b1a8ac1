"""Run configuration: profiles (``ci``, ``cpu``, ``cpu-paper``, ``paper``) as plain TOML, resolved into one
dataclass.

A profile holds a ``[run]`` section (what to generate, optional ``[window]`` of the real data), one
``[generators.<name>]`` section per generator, and ``[segmenter]``, ``[tracker]``, ``[realism]``
sections whose keys are the fields of those stages' config dataclasses. The resolved ``RunConfig``
is logged whole to MLflow and hashed to key the stage caches. A profile states only what it changes
from the one it ``extends``; a base (``base``) exists only to be extended and is not offered as a run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILES = ("ci", "cpu", "cpu-paper", "paper")
#: profile files that exist only to be extended: ``extends = "base"`` works, ``--profile base`` does not
BASES = ("base",)


@dataclass
class RunConfig:
    """Everything one ``python -m benchmark run`` needs, as plain data."""

    profile: str
    dataset: str
    generator: str
    seed: int = 0
    train_sequence: str = "01"
    test_sequence: str = "02"
    n_sequences: int = 2
    n_frames: int = 0  # 0: as long as the real training sequence (or its window)
    window: dict[str, Any] | None = None  # {"frames": [start, stop], "box": [y0, x0, h, w]}
    oracle: bool = False  # also render the real training textures through the generator's frame path
    generator_params: dict[str, Any] = field(default_factory=dict)
    segmenter: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)
    realism: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def window_cut(self) -> tuple[range, tuple[int, int, int, int] | None] | None:
        """``window`` as the frame range and ``(y0, x0, h, w)`` box to cut (None: the whole data)."""
        if not self.window:
            return None
        box = tuple(self.window["box"]) if self.window.get("box") else None
        return range(*self.window["frames"]), box


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of TOML tables: the override's keys win, sub-tables merge."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


#: the tables a profile may hold; their keys are checked when the stage configs are built
PROFILE_SECTIONS = ("run", "window", "generators", "segmenter", "tracker", "realism")
#: scalar keys of ``[run]`` (a sub-table of ``[run]`` overrides them for one dataset)
RUN_KEYS = ("n_sequences", "n_frames", "oracle")


def check_profile(profile: str | Path, raw: dict[str, Any]) -> None:
    """Refuse what would otherwise be ignored: an unknown section (``[segmentor]``) or ``[run]`` key, or a
    section that is not a table; one line naming the profile, before any work starts."""
    for key, value in raw.items():
        if key not in PROFILE_SECTIONS:
            raise ValueError(f"profile {profile!r}: unknown section [{key}]; known: {', '.join(PROFILE_SECTIONS)}")
        if not isinstance(value, dict):
            raise ValueError(f"profile {profile!r}: [{key}] must be a table, got {value!r}")
    for key, value in raw.get("run", {}).items():
        tables = value.items() if isinstance(value, dict) else [(key, value)]
        for name, _ in tables:
            if name not in RUN_KEYS:
                where = f'[run."{key}"]' if isinstance(value, dict) else "[run]"
                raise ValueError(f"profile {profile!r}: unknown key {name!r} in {where}; known: {', '.join(RUN_KEYS)}")


def load_profile(profile: str | Path) -> dict[str, Any]:
    """Raw TOML of a named profile or a path to a TOML file, merged over the chain of bases it extends;
    a clear one-line error for unknown names, sections and ``extends`` targets, and for cycles.

    A profile may start from another one: top-level ``extends = "cpu"`` deep-merges its tables over
    that profile's (the child's keys win). A base is refused here, where a run would use it, because
    it is an incomplete profile that nobody measured.
    """
    if not Path(profile).suffix and str(profile) in BASES:
        choices = ", ".join(PROFILES)
        raise ValueError(f"profile {profile!r} is only a base for other profiles; choose one of {choices}")
    return _resolve(profile, ())


def _resolve(profile: str | Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``load_profile`` without the base check; ``chain`` holds the files already on the ``extends`` path
    (resolved, so ``a.toml`` and ``./a.toml`` are one file and a cycle cannot recurse forever)."""
    raw = _read_profile(profile)
    base = raw.pop("extends", None)
    check_profile(profile, raw)
    if base is None:
        return raw
    here = (*chain, _profile_path(profile).resolve())
    target = _extends_target(profile, base)
    if target.resolve() in here:
        names = " -> ".join(p.stem for p in (*here, target))
        raise ValueError(f"profile {profile!r}: circular 'extends' chain {names}")
    return _merge(_resolve(base, here), raw)


def _extends_target(profile: str | Path, base: Any) -> Path:
    """The file ``extends = base`` names, checked before it is read: the error names the extending profile."""
    if not isinstance(base, str) or not base:
        raise ValueError(f"profile {profile!r}: 'extends' must be a profile name or TOML path, got {base!r}")
    path = _profile_path(base)
    if not path.is_file():
        known = ", ".join(sorted((*PROFILES, *BASES)))
        raise ValueError(f"profile {profile!r}: extends unknown profile {base!r}; "
                         f"known: {known}, or a TOML path")
    return path


def _profile_path(profile: str | Path) -> Path:
    """A name without a suffix is a shipped profile (or base) in ``PROFILE_DIR``; anything else is a path."""
    path = Path(profile)
    return PROFILE_DIR / f"{profile}.toml" if not path.suffix else path


def _read_profile(profile: str | Path) -> dict[str, Any]:
    path = _profile_path(profile)
    if not Path(profile).suffix and not path.is_file():
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)} or pass a TOML path")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: profile file is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None


def build_run_config(profile: str | Path, dataset: str, generator: str, seed: int = 0,
                     generator_overrides: dict[str, Any] | None = None) -> RunConfig:
    raw = copy.deepcopy(load_profile(profile))
    run = dict(raw.get("run", {}))
    per_dataset = run.pop(dataset, {})  # [run."<dataset>"]: overrides of [run] for one dataset
    for key in [k for k, v in run.items() if isinstance(v, dict)]:
        run.pop(key)
    run.update(per_dataset)
    window = raw.get("window", {}).get(dataset) or raw.get("window", {}).get("default")
    params = dict(raw.get("generators", {}).get(generator, {}))
    params.update(generator_overrides or {})
    return RunConfig(
        profile=Path(profile).stem if Path(profile).suffix else str(profile),
        dataset=dataset,
        generator=generator,
        seed=seed,
        n_sequences=int(run.get("n_sequences", 2)),
        n_frames=int(run.get("n_frames", 0)),
        oracle=bool(run.get("oracle", False)),
        window=window,
        generator_params=params,
        segmenter=dict(raw.get("segmenter", {})),
        tracker=dict(raw.get("tracker", {})),
        realism=dict(raw.get("realism", {})),
    )


def stable_hash(*parts: Any, length: int = 12) -> str:
    """Short sha256 of JSON-serialised parts: keys the stage caches."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


PARAM_HELP = ("generator parameter, KEY=VALUE (VALUE read as JSON when it parses, e.g. t_first=400, "
              "ddpm_channels=[16,32]) or a JSON object '{\"t_first\": 400}'; repeatable, later ones win")


def parse_params(items: Sequence[str] | str | None) -> dict[str, Any]:
    """``--param`` of every command (``run``, ``oracle``, ``generate``): each item is ``KEY=VALUE`` or a JSON
    object of generator parameters; one line naming the item when it is neither."""
    params: dict[str, Any] = {}
    for item in [items] if isinstance(items, str) else (items or []):
        text = item.strip()
        if text.startswith(("{", "[")) or "=" not in text:
            params.update(_json_params(item))
            continue
        key, value = text.split("=", 1)
        if not key.strip():
            raise ValueError(f"--param {item!r}: expected KEY=VALUE with a parameter name before '='")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _json_params(item: str) -> dict[str, Any]:
    try:
        value = json.loads(item)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--param {item!r}: not valid JSON ({exc.msg} at character {exc.pos}) and not KEY=VALUE") \
            from None
    if not isinstance(value, dict):
        raise ValueError(f"--param {item!r}: expected a JSON object of generator parameters, "
                         "e.g. '{\"t_first\": 400}', or KEY=VALUE")
    return value


#: seeds every library accepts (numpy wants >= 0; TensorFlow's op seeds are 32-bit signed)
MAX_SEED = 2**31 - 1


def seed_int(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2**31 - 1], refused before any stage runs (numpy,
    torch and TensorFlow would each fail on some of the rest, minutes in)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range [0, {MAX_SEED}]")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (frames, sequences, pixels, threads): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
