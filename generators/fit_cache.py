"""The one fit cache: a generator fitted on a sequence is stored once, under one key, for every command.

``python -m benchmark generate`` and the fit stage of ``run`` / ``oracle`` both go through
``fitted_generator``, so either reuses the other's fit. The key (``fit_key``) covers what the fitted state
depends on, and nothing else:

- the generator's name and versions (``FIT_CACHE_VERSION`` for the layout, ``Generator.fit_version`` for
  the generator's own fit code: bump it when a change to the fit changes what it produces);
- every config field that shapes the fit, with its default filled in (so a changed default re-fits), but
  not the sampling fields (they change what ``generate`` does with a fit) nor the runtime ones
  (``RUNTIME_FIELDS``: progress bars, device, where checkpoints go);
- the training sequence's content digest (raw frames and GT, by bytes).

A killed fit resumes from its checkpoints (generators with a ``checkpoint_dir`` field) in its resume
folder (``resume_folder``); concurrent fits of one key wait for each other. The resume folder is
``<SYNTHVID_RESUME_ROOT>/<name>-<key>`` when that variable is set (``benchmark.budget``: a campaign points
it at the committed ``results/_resume/``, so a fit stopped at its deadline continues in a fresh clone), else
``<name>-<key>.resume`` beside the cache entry. The default one is removed once the fit is stored; one under
``SYNTHVID_RESUME_ROOT`` is KEPT (it holds the final checkpoints, so the fit comes back without training
in a clone that lacks this cache): the campaign removes it once the run's result bundle has landed.
``resume_progress`` reads how far each network of a resume folder got (checkpoint headers only).

Before fitting, a SHIPPED fit of the same key (``benchmark.shipped``: ``fits/<dataset>/*.safetensors``
and its card) is checked against its sha256 and unpacked into the cache entry instead: a fresh clone
never fits what the repository ships. ``refit=True`` ignores both the cache and the shipped fits. Every
fit made here leaves ``fit_record.json`` in its folder (wall time, iterations, final losses, machine,
commit): what a shipped fit's card reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmark.budget import resume_root
from benchmark.config import build_run_config, config_from_dict, config_to_dict, stable_hash
from benchmark.ctc import CTCSequence, window_sequence
from benchmark.ctc.digest import sequence_digest
from benchmark.datasets import resolve_dataset
from benchmark.experiment import git_commit
from benchmark.io import atomic_directory, atomic_write_text, folder_lock
from benchmark.machine import cpu_description, machine_class
from benchmark.paths import cache_dir
from benchmark.shipped import ShippedEntry, entries, fetch_verified, unpack_folder
from generators.base import Generator
from generators.registry import get_generator

logger = logging.getLogger(__name__)

FIT_CACHE_VERSION = 4  # bump when a fitted state's layout on disk changes (4: safetensors + SHA256SUMS, no pickle)
#: config fields that change how a fit runs, not what it produces
RUNTIME_FIELDS = frozenset({"progress", "device", "checkpoint_dir"})
FIT_RECORD = "fit_record.json"  # written beside the saved state by every fit made here


def fit_config(cls: type[Generator], params: dict[str, Any]) -> dict[str, Any]:
    """The resolved config fields that shape ``cls``'s fit (defaults filled in; sampling and runtime out)."""
    resolved = config_to_dict(config_from_dict(cls.config_class, params))
    return {k: v for k, v in resolved.items() if k not in cls.sampling_fields | RUNTIME_FIELDS}


def fit_key(cls: type[Generator], params: dict[str, Any], seq: CTCSequence) -> str:
    """The one key of a fitted state (see the module docstring)."""
    payload = {"generator": cls.name, "versions": [FIT_CACHE_VERSION, cls.fit_version],
               "config": fit_config(cls, params), "data": sequence_digest(seq)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def profile_fit_inputs(profile: str, dataset: str, name: str, overrides: dict[str, Any] | None = None,
                       data_root: str | None = None, train_sequence: str | None = None
                       ) -> tuple[dict[str, Any], CTCSequence]:
    """The generator params and training sequence of ``run --profile``, so that ``generate --profile`` and
    ``ship_fit.py`` reach the run's fit key: the profile's params (``build_run_config``, ``overrides`` on
    top) and its window of the training sequence (``ci``: a crop; cut here byte for byte as the run's
    window stage cuts it, into ``<cache>/windows``)."""
    config = build_run_config(profile, dataset, name, generator_overrides=overrides)
    source = CTCSequence(resolve_dataset(dataset, data_root, fetch=True), train_sequence or config.train_sequence)
    cut = config.window_cut()
    if cut is None:
        return config.generator_params, source
    target = cache_dir() / "windows" / f"{dataset}-{stable_hash(config.window, sequence_digest(source))}"
    with folder_lock(target, on_wait=logger.warning):
        if not (target / dataset / source.name).is_dir():
            with atomic_directory(target, overwrite=True) as tmp:
                window_sequence(source, tmp / dataset, frames=cut[0], box=cut[1])
    return config.generator_params, CTCSequence(target / dataset, source.name)


def fit_folder(name: str, params: dict[str, Any], seq: CTCSequence, cache: Path | None = None) -> Path:
    """The cache entry of ``name`` fitted on ``seq`` with ``params`` (present or not)."""
    return (cache or cache_dir()) / "generators" / f"{name}-{fit_key(get_generator(name), params, seq)}"


def resume_folder(name: str, params: dict[str, Any], seq: CTCSequence, cache: Path | None = None) -> Path:
    """Where the fit of ``name`` on ``seq`` with ``params`` keeps its resume checkpoints (present or not)."""
    return _resume_folder(fit_folder(name, params, seq, cache))


def _resume_folder(folder: Path) -> Path:
    root = resume_root()
    return root / folder.name if root is not None else folder.with_name(folder.name + ".resume")


def resume_progress(folder: str | Path) -> dict[str, tuple[int, int | None] | None]:
    """``{part: (step, total) or None}``: the newest checkpoint of each network in a resume folder, e.g.
    ``{"ddpm": (1200, 1500), "flow": None}``. Headers only, each sha256-checked (a changed checkpoint is
    left out with a warning); the generator's parts (``Generator.resume_parts``, by the folder's ``<name>-<key>``)
    are listed even without a checkpoint."""
    from generators.checkpoints import progress  # here: the campaign's --help must not import torch

    folder = Path(folder)
    name = folder.name.removesuffix(".resume").rpartition("-")[0]
    found: dict[str, tuple[int, int | None] | None] = dict(progress(folder))
    try:
        parts = get_generator(name).resume_parts
    except ValueError:  # a folder of a generator this checkout does not have
        parts = ()
    return {**dict.fromkeys(parts), **found}


def fitted_generator(name: str, params: dict[str, Any], seq: CTCSequence, cache: Path | None = None,
                     refit: bool = False) -> Generator:
    """The generator ``name`` fitted on ``seq``: loaded when this key was fitted before or is shipped, else
    fitted and stored."""
    cls = get_generator(name)
    generator = cls.from_params(params)
    if not cls.needs_fit:
        return generator.fit(seq)
    root = cache or cache_dir()
    key = fit_key(cls, params, seq)
    folder = root / "generators" / f"{name}-{key}"
    with folder_lock(folder, on_wait=logger.warning, lock_file=root / "locks" / f"fit-{folder.name}.lock"):
        cached = folder.is_dir() and (folder / "config.json").is_file()
        if not refit and (cached or _unpack_shipped(name, key, folder)):
            if cached:
                logger.info("fit of %s: cached in %s", name, folder)
            loaded = cls.load(folder)
            loaded.config = generator.config  # runtime-only fields (progress, device) from this call
            return loaded
        resume = _resume_folder(folder)
        if "checkpoint_dir" in {f.name for f in dataclasses.fields(cls.config_class)} and not params.get("checkpoint_dir"):
            generator = cls.from_params({**params, "checkpoint_dir": str(resume)})
        start = time.perf_counter()
        generator.fit(seq)
        wall_s = time.perf_counter() - start
        with atomic_directory(folder, overwrite=True) as tmp:
            generator.save(tmp)
            atomic_write_text(tmp / FIT_RECORD, json.dumps(fit_record(generator, wall_s), indent=1, default=str))
        if resume_root() is None:  # under SYNTHVID_RESUME_ROOT the campaign removes it (module docstring)
            shutil.rmtree(resume, ignore_errors=True)
    return generator


def shipped_fit(name: str, key: str) -> ShippedEntry | None:
    """The shipped fit of ``name`` with fit key ``key`` (not yet verified), or None. The key covers the
    training data's digest, so a match is a fit on the same data."""
    return next((e for e in entries("fit") if e.card.get("fit_key") == key and e.card.get("generator") == name), None)


def fit_available(name: str, params: dict[str, Any], seq: CTCSequence, cache: Path | None = None) -> bool:
    """Whether ``fitted_generator`` would load this fit (cached, or shipped) rather than train it."""
    folder = fit_folder(name, params, seq, cache)
    return (folder / "config.json").is_file() or shipped_fit(name, folder.name.rpartition("-")[2]) is not None


def _unpack_shipped(name: str, key: str, folder: Path) -> bool:
    """Unpack the shipped fit of ``name`` with fit key ``key`` (sha256 checked) into ``folder``; False when
    none is shipped."""
    entry = shipped_fit(name, key)
    if entry is None:
        return False
    archive = fetch_verified(entry)
    with atomic_directory(folder, overwrite=True) as tmp:
        unpack_folder(archive, tmp)
    logger.info("fit of %s: shipped %s (sha256 ok)", name, entry.location)
    return True


def fit_record(generator: Generator, wall_s: float) -> dict[str, Any]:
    """What a fit cost and reached: wall time, iterations and final losses (from the generator's training
    curves or history, where it keeps them), machine and commit."""
    iterations: dict[str, int] = {}
    final_loss: dict[str, float] = {}
    curves = getattr(generator, "training_curves", None)  # BVDM: one loss per iteration and network
    if isinstance(curves, dict):
        for part, curve in curves.items():
            if curve:
                iterations[part], final_loss[part] = len(curve), float(curve[-1])
    history = getattr(generator, "history", None)  # CellCycleGAN: rows of windowed means every log_every
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        last = history[-1]
        iterations["gan"] = int(last.get("iteration", 0))
        final_loss.update({k: float(v) for k, v in last.items() if k.startswith("loss")})
    return {"wall_s": round(wall_s, 3), "iterations": iterations, "final_loss": final_loss,
            "machine_class": machine_class(), "cpu": cpu_description(), "commit": git_commit(),
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
