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
import math
import numbers
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILES = ("ci", "cpu", "cpu-paper", "paper", "lowdata")
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
    #: the low-data protocol (``downstream.training_set.TrainingSetConfig``); empty: the synthetic video alone
    downstream: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data. An empty ``downstream`` (the synthetic video alone: every run before the
        low-data protocol) is left out, so those runs' config records and sweep task ids stay as they were."""
        values = dataclasses.asdict(self)
        if not values["downstream"]:
            del values["downstream"]
        return values

    def window_cut(self) -> tuple[range, tuple[int, int, int, int] | None] | None:
        """``window`` as the frame range and ``(y0, x0, h, w)`` box to cut (None: the whole data)."""
        if not self.window:
            return None
        box = tuple(self.window["box"]) if self.window.get("box") else None
        return range(*self.window["frames"]), box


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of TOML tables (profiles over their base, ``--param`` over a profile): the override's keys
    win, sub-tables merge."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merge_params(out[key], value) if both else copy.deepcopy(value)
    return out


def nest_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested tables, in order (later keys win): ``{"ddpm.iterations": 40}`` is
    ``{"ddpm": {"iterations": 40}}``, the ``[generators.bvdm.ddpm]`` table of a profile; so ``--param``
    and sweep grids can name a field of a nested section."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            value = nest_params(value)
        for part in reversed(key.split(".")[1:]):
            value = {part: value}
        out = merge_params(out, {key.split(".")[0]: value})
    return out


#: the tables a profile may hold; their keys are checked when the stage configs are built
PROFILE_SECTIONS = ("run", "window", "generators", "segmenter", "tracker", "realism", "downstream")
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


def _resolve(profile: str | Path, chain: tuple[Path, ...], path: Path | None = None) -> dict[str, Any]:
    """``load_profile`` without the base check; ``chain`` holds the files already on the ``extends`` path
    (resolved, so ``a.toml`` and ``./a.toml`` are one file and a cycle cannot recurse forever). ``path``: the
    file an ``extends`` named, already resolved against the folder of the profile that named it (``profile``
    is then only how error lines call it); None: ``profile`` as given on the command line."""
    path = path or _profile_path(profile)
    raw = _read_profile(profile, path)
    base = raw.pop("extends", None)
    check_profile(profile, raw)
    if base is None:
        return raw
    here = (*chain, path.resolve())
    target = _extends_target(profile, path, base)
    if target.resolve() in here:
        raise ValueError(f"profile {profile!r}: circular 'extends' chain {_chain_text((*here, target.resolve()))}")
    return merge_params(_resolve(base, here, target), raw)


def _chain_text(files: Sequence[Path]) -> str:
    """``a -> b -> a``: file stems, or whole paths where two files of the chain share a stem."""
    stems = [f.stem for f in files]
    unique = len({*stems}) == len({*files})
    return " -> ".join(stems if unique else [str(f) for f in files])


def extends_is_path(base: str) -> bool:
    """Whether ``extends = base`` names a TOML file (it contains a ``/`` or has a suffix such as ``.toml``)
    rather than a shipped profile: a file resolves against the folder of the profile that names it, never
    the working directory, so a profile resolves the same wherever it runs (sweep workers included)."""
    return "/" in base or "\\" in base or bool(Path(base).suffix)


def _extends_target(profile: str | Path, path: Path, base: Any) -> Path:
    """The file ``extends = base`` in ``path`` names, checked before it is read: the error names the
    extending profile and, for a path, where it was looked for."""
    if not isinstance(base, str) or not base:
        raise ValueError(f"profile {profile!r}: 'extends' must be a profile name or TOML path, got {base!r}")
    target = path.parent / Path(base).expanduser() if extends_is_path(base) else PROFILE_DIR / f"{base}.toml"
    if not target.is_file():
        known = ", ".join(sorted((*PROFILES, *BASES)))
        where = f" (no file {target}, relative to the folder of {path.name})" if extends_is_path(base) else ""
        raise ValueError(f"profile {profile!r}: extends unknown profile {base!r}{where}; "
                         f"known: {known}, or a TOML path")
    return target


def _profile_path(profile: str | Path) -> Path:
    """A name without a suffix is a shipped profile (or base) in ``PROFILE_DIR``; anything else is a path."""
    path = Path(profile)
    return PROFILE_DIR / f"{profile}.toml" if not path.suffix else path


def _read_profile(profile: str | Path, path: Path) -> dict[str, Any]:
    if not Path(profile).suffix and not path.is_file():
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)} or pass a TOML path")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: profile file is missing") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a profile TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None


def profile_label(profile: str | Path | None) -> str | None:
    """The one label a ``--profile`` value goes by in tags, run names, lookups and the thresholds file: a
    shipped profile's name as given, a TOML path's stem (``my/fast.toml`` -> ``fast``). Every command
    (run, oracle, sweep, report, check) passes its ``--profile`` through here, so the value that ran a
    benchmark also finds it. None (no ``--profile``: any) stays None."""
    if profile is None or str(profile) == "":
        return None
    path = Path(profile)
    return path.stem if path.suffix else str(profile)


#: the ``[tracker] method`` of a profile that names none: the one source for the tracker registry
#: (``downstream.tracker``), run names, bundle paths and the reports' default rows
DEFAULT_TRACKER = "learned"

#: grid keys of a sweep spec with this prefix set ``[downstream]`` (the low-data protocol), not the generator
DOWNSTREAM_PREFIX = "downstream."


def split_point(point: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sweep grid point as (generator overrides, ``[downstream]`` overrides): ``downstream.real_frames = 2``
    goes to the latter without its prefix, every other key to the generator, as ``--param`` would."""
    generator = {k: v for k, v in point.items() if not k.startswith(DOWNSTREAM_PREFIX)}
    downstream = {k[len(DOWNSTREAM_PREFIX):]: v for k, v in point.items() if k.startswith(DOWNSTREAM_PREFIX)}
    return generator, downstream


def build_run_config(profile: str | Path, dataset: str, generator: str, seed: int = 0,
                     generator_overrides: dict[str, Any] | None = None,
                     downstream_overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run's config: the profile (its ``extends`` chain merged) for one dataset, generator and seed, with
    ``--param`` overrides of the generator's section and ``--downstream`` overrides of ``[downstream]``."""
    raw = copy.deepcopy(load_profile(profile))
    run = dict(raw.get("run", {}))
    per_dataset = run.pop(dataset, {})  # [run."<dataset>"]: overrides of [run] for one dataset
    for key in [k for k, v in run.items() if isinstance(v, dict)]:
        run.pop(key)
    run.update(per_dataset)
    window = raw.get("window", {}).get(dataset) or raw.get("window", {}).get("default")
    params = merge_params(raw.get("generators", {}).get(generator, {}), nest_params(generator_overrides or {}))
    return RunConfig(
        profile=profile_label(profile) or "",
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
        downstream=merge_params(raw.get("downstream", {}), nest_params(downstream_overrides or {})),
    )


C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (nested sections as nested dicts): what is saved, logged and hashed."""
    return dataclasses.asdict(config)


def config_from_dict(config_class: type[C], values: Mapping[str, Any], where: str | None = None) -> C:
    """Build a config dataclass from a dict (a profile's table), rejecting unknown keys and values of the wrong
    type with a clear message: a string where a count belongs must fail here, not after an hour of earlier
    stages.

    A field whose type is itself a config dataclass is a nested section (``[generators.bvdm.ddpm]``): it
    takes a table of that class's fields, checked the same way, and missing ones keep their defaults.
    A class may fill a table's missing keys from its own values first (``section_defaults``: BVDM's
    sampling presets) and name the keys it renamed (``renamed``), so that an old key gets a pointer to the
    new one instead of a bare "unknown".
    """
    where = where or config_class.__name__
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a table of parameters, got {values!r}")
    defaults = getattr(config_class, "section_defaults", None)
    if defaults is not None:
        values = {**defaults(values), **values}
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        renamed = getattr(config_class, "renamed", {})
        moved = "; ".join(f"{key!r} is now {renamed[key]!r}" for key in unknown if key in renamed)
        raise ValueError(f"{where}: unknown parameters {unknown}" + (f" ({moved})" if moved else "")
                         + f"; known: {sorted(names)}")
    hints = typing.get_type_hints(config_class)
    kwargs = {}
    for key, value in values.items():
        section = hints.get(key)
        if dataclasses.is_dataclass(section) and isinstance(section, type):
            kwargs[key] = value if isinstance(value, section) else config_from_dict(section, value, f"{where}.{key}")
            continue
        if not _fits(value, hints.get(key, Any)):
            raise ValueError(f"{where}: parameter {key!r} = {value!r} is not of type {_type_name(hints[key])}")
        if isinstance(value, list):
            value = tuple(value)  # TOML/JSON arrays -> tuples (configs stay hashable)
        kwargs[key] = value
    return config_class(**kwargs)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a plain (TOML/JSON) value fits a config field's annotation: int, float (an int too), bool, str,
    ``X | None`` and tuples; anything else is not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    return True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")



def stable_hash(*parts: Any, length: int = 12) -> str:
    """Short sha256 of JSON-serialised parts: keys the stage caches."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


PARAM_HELP = ("generator parameter, KEY=VALUE (VALUE read as JSON when it parses; a dotted KEY names a field "
              "of a nested section, e.g. sampling.t_first=400, ddpm.block_out_channels=[16,32]) or a JSON object "
              "'{\"sampling\": {\"t_first\": 400}}'; repeatable, later ones win")


def parse_params(items: Sequence[str] | str | None) -> dict[str, Any]:
    """``--param`` of every command (``run``, ``oracle``, ``generate``), the one parser they share: each item
    is ``KEY=VALUE`` or a JSON object of generator parameters; one line naming the item when it is neither.

    Returns NESTED tables (``ddpm.batch_size=16`` is ``{"ddpm": {"batch_size": 16}}``, ``nest_params``), the
    form a config class reads: ``generate`` hands them to ``from_params`` directly, where a dotted key would
    be an unknown field. Items merge in order, later ones win, sub-tables merge (``ddpm.iterations=40`` after
    ``'{"ddpm": {"batch_size": 16}}'`` keeps the batch size)."""
    params: dict[str, Any] = {}
    for item in [items] if isinstance(items, str) else (items or []):
        params = merge_params(params, nest_params(_param_item(item)))
    return params


def _param_item(item: str) -> dict[str, Any]:
    """One ``--param`` item as a table of (possibly dotted) keys."""
    text = item.strip()
    if text.startswith(("{", "[")) or "=" not in text:
        return _json_params(item)
    key, value = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"--param {item!r}: expected KEY=VALUE with a parameter name before '='")
    try:
        return {key.strip(): json.loads(value)}
    except json.JSONDecodeError:
        return {key.strip(): value}


def _json_params(item: str) -> dict[str, Any]:
    try:
        value = json.loads(item)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--param {item!r}: not valid JSON ({exc.msg} at character {exc.pos}) and not KEY=VALUE") \
            from None
    if not isinstance(value, dict):
        raise ValueError(f"--param {item!r}: expected a JSON object of generator parameters, "
                         "e.g. '{\"sampling\": {\"t_first\": 400}}', or KEY=VALUE")
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


def int_at_least(minimum: int, what: str = "an integer") -> typing.Callable[[str], int]:
    """argparse type of an integer option with a floor (``positive_int`` is ``int_at_least(1)``): a value
    below it would be accepted and logged, then fail or mean nothing minutes later."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"  # argparse names the type in its messages
    return parse


#: argparse type of a count that may be zero (retries, bootstrap replicates where 0 means "none")
non_negative_int = int_at_least(0)


def finite_float(text: str) -> float:
    """argparse type of a real number: ``nan`` and ``inf`` parse as floats but mean nothing as a setting."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type of a margin or a duration: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """argparse type of a relative margin below 100 %: a finite number in [0, 1)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value
