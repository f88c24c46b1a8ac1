"""The interface every generator implements: ``fit(real) -> generate(spec) -> CTC folder``.

A generator is fitted on ONE real annotated sequence (a ``CTCSequence``), saves/loads its fitted
state as a folder (``config.json`` plus whatever weights and statistics it needs), and writes N
synthetic sequences of any length and frame size as a CTC dataset (``01``, ``02``, ... with
``NN_GT/SEG`` for every frame, ``NN_GT/TRA`` markers and ``man_track.txt``).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from benchmark.config import config_from_dict, config_to_dict, merge_params, nest_params
from benchmark.ctc import CTCSequence

MAX_SEQUENCES = 99
MAX_SIDE = 8192


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate. ``shape=None`` means the real training sequence's frame size."""

    n_sequences: int = 2
    n_frames: int = 92
    shape: tuple[int, int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject empty, negative or impossible sizes here, before any generator turns them into a numpy
        error or tries to allocate tens of GB: CTC names sequences 01-99, and no 2D CTC dataset has frames
        wider than ~2k pixels (``MAX_SIDE`` leaves room for 4x that)."""
        counts = {"n_sequences": self.n_sequences, "n_frames": self.n_frames, **(
            {"height": self.shape[0], "width": self.shape[1]} if self.shape is not None else {})}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GenerateSpec: {name} must be a positive integer, got {value!r}")
        if self.n_sequences > MAX_SEQUENCES:
            raise ValueError(f"GenerateSpec: n_sequences = {self.n_sequences}, but CTC names sequences "
                             f"01-{MAX_SEQUENCES}")
        if self.shape is not None and max(self.shape) > MAX_SIDE:
            raise ValueError(f"GenerateSpec: shape {tuple(self.shape)} exceeds {MAX_SIDE} pixels a side")


@dataclass
class GeneratorConfig:
    """Base of every generator's config dataclass; subclasses add their own fields."""

    device: str = "cpu"
    progress: bool = True


class Generator(ABC):
    """Base class. Subclasses set ``name`` and ``config_class`` and register with ``@register_generator``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    #: whether ``fit`` learns anything (``folder`` and ``real`` do not)
    needs_fit: ClassVar[bool] = True
    #: whether ``generate`` writes into ``out_dir`` (``folder`` hands back existing data and writes nothing)
    writes_output: ClassVar[bool] = True
    #: config fields (or whole nested sections: BVDM's ``sampling``) used only by ``generate``: changing them
    #: reuses the fitted state, which is how an ablation sweep shares one fitted model
    sampling_fields: ClassVar[frozenset[str]] = frozenset()
    #: part of the fit cache key (``generators.fit_cache``): bump when a change to ``fit`` changes its result
    fit_version: ClassVar[int] = 1
    #: whether ``fit`` trains a network that a GPU speeds up (a distributed sweep gives such a fit a GPU when
    #: the cluster has one, and runs it there with ``device = "cuda"``, a runtime field outside the fit key)
    fit_accelerator: ClassVar[bool] = False
    #: the networks whose training checkpoints into the fit's resume folder (config field ``checkpoint_dir``):
    #: ``generators.fit_cache.resume_progress`` lists them even before their first checkpoint
    resume_parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @classmethod
    def renders_oracle(cls) -> bool:
        """Whether the generator can render real textures through its frame path (``render_oracle``): a run
        leaves the frame-ceiling stage out for one that cannot, instead of failing after fit and generate."""
        return cls.render_oracle is not Generator.render_oracle

    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None) -> Generator:
        """Build from a plain dict (a TOML profile section); unknown keys are an error."""
        return cls(config_from_dict(cls.config_class, params or {}))

    @abstractmethod
    def fit(self, real: CTCSequence) -> Generator:
        """Estimate everything from one real annotated sequence; returns self."""

    @abstractmethod
    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        """Write ``spec.n_sequences`` sequences (``01``, ``02``, ...) as a CTC dataset under ``out_dir``."""

    def source_folder(self) -> Path | None:
        """The existing CTC folder that a generator writing nothing (``writes_output = False``: ``folder``)
        hands back from ``generate``, known before any work: commands refuse an output overlapping it and
        stage keys hash its content. None for a generator that writes its own data."""
        return None

    def render_oracle(self, real: CTCSequence, out_dir: Path, n_frames: int | None = None) -> Path:
        """Render the REAL textures of ``real`` through this generator's own frame path: one CTC sequence.

        The real frames cut at the real full masks (``benchmark.ctc.crops.full_masks``), with this
        generator's texture preprocessing, placed at the real positions and passed through its own
        compositing, background, blur, noise and clipping; written as sequence ``01`` under ``out_dir``
        (TRA = the real full masks, lineage from the real tracks). Its realism against held-out real data
        measures what the frame model alone costs. Needs a fitted generator; returns ``out_dir``.
        """
        raise NotImplementedError(f"generator {self.name!r} has no oracle rendering")

    def save(self, directory: str | Path) -> None:
        """Save the fitted state. Default: the config only; learned generators add their weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config_to_dict(self.config), indent=2))
        (directory / "generator.json").write_text(json.dumps({"name": self.name}))
        self._save_state(directory)

    @classmethod
    def load(cls, directory: str | Path) -> Generator:
        directory = Path(directory)
        saved = cls.upgrade_saved_config(json.loads((directory / "config.json").read_text()))
        config = config_from_dict(cls.config_class, saved)
        generator = cls(config)
        generator._load_state(directory)
        return generator

    @classmethod
    def upgrade_saved_config(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Hook: map the config of a state saved by an older version onto today's fields (renamed or
        replaced ones), so a cached fit keeps loading after an upgrade."""
        return values

    def with_sampling(self, overrides: dict[str, Any]) -> Generator:
        """Apply sampling-only overrides to a fitted generator (anything else is an error).

        ``overrides`` is a profile-style table (dotted keys allowed: ``{"sampling.t_first": 100}``). A
        nested section is updated, not replaced: fields it does not name keep their current values, unless
        the section says otherwise (``updated``: a new BVDM preset resets the fields it controls).
        """
        nested = nest_params(overrides)
        bad = sorted(set(nested) - set(self.sampling_fields))
        if bad:
            raise ValueError(f"{self.name}: {bad} are not sampling parameters; sampling parameters: "
                             f"{sorted(self.sampling_fields)}")
        values = config_to_dict(self.config)
        for name, value in nested.items():
            current = getattr(self.config, name)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                update = getattr(current, "updated", None)
                value = update(value) if update else merge_params(values[name], value)
            values[name] = value
        self.config = config_from_dict(type(self.config), values)
        return self

    def _save_state(self, directory: Path) -> None:
        """Hook for subclasses: write fitted statistics and weights into ``directory``."""

    def _load_state(self, directory: Path) -> None:
        """Hook for subclasses: read back what ``_save_state`` wrote."""


_REGISTRY: dict[str, type[Generator]] = {}
ENTRY_POINT_GROUP = "synthvid.generators"


def registered_generators() -> Mapping[str, type[Generator]]:
    """The generators registered so far, by name: a read-only view, so that only ``register_generator``
    and ``adopt_generator`` change the registry."""
    return types.MappingProxyType(_REGISTRY)


def adopt_generator(name: str, cls: type[Generator]) -> type[Generator]:
    """Register a class loaded from an entry point under ``name`` unless the name is taken (importing it may
    already have registered it with ``register_generator``); returns the class registered under ``name``.
    A class that names itself nothing takes the entry point's name: the fit cache keys and saved models
    carry it, so two plug-ins never share a cached fit."""
    if not cls.name:
        cls.name = name
    return _REGISTRY.setdefault(name, cls)


def register_generator(name: str) -> Callable[[type[Generator]], type[Generator]]:
    """Class decorator: make a generator available by ``name`` to the CLI and the pipeline."""

    def decorate(cls: type[Generator]) -> type[Generator]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"generator {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate
