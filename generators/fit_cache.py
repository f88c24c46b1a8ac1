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

A killed fit resumes from its checkpoints (generators with a ``checkpoint_dir`` field) in
``<name>-<key>.resume`` beside the cache entry; concurrent fits of one key wait for each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from benchmark.config import config_from_dict, config_to_dict
from benchmark.ctc import CTCSequence
from benchmark.ctc.digest import sequence_digest
from benchmark.io import atomic_directory, folder_lock
from benchmark.paths import cache_dir
from generators.base import Generator
from generators.registry import get_generator

logger = logging.getLogger(__name__)

FIT_CACHE_VERSION = 3  # bump when a fitted state's layout on disk changes
#: config fields that change how a fit runs, not what it produces
RUNTIME_FIELDS = frozenset({"progress", "device", "checkpoint_dir"})


def fit_config(cls: type[Generator], params: dict[str, Any]) -> dict[str, Any]:
    """The resolved config fields that shape ``cls``'s fit (defaults filled in; sampling and runtime out)."""
    resolved = config_to_dict(config_from_dict(cls.config_class, params))
    return {k: v for k, v in resolved.items() if k not in cls.sampling_fields | RUNTIME_FIELDS}


def fit_key(cls: type[Generator], params: dict[str, Any], seq: CTCSequence) -> str:
    """The one key of a fitted state (see the module docstring)."""
    payload = {"generator": cls.name, "versions": [FIT_CACHE_VERSION, cls.fit_version],
               "config": fit_config(cls, params), "data": sequence_digest(seq)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fitted_generator(name: str, params: dict[str, Any], seq: CTCSequence, cache: Path | None = None,
                     refit: bool = False) -> Generator:
    """The generator ``name`` fitted on ``seq``: loaded when this key was fitted before, else fitted and stored."""
    cls = get_generator(name)
    generator = cls.from_params(params)
    if not cls.needs_fit:
        return generator.fit(seq)
    root = cache or cache_dir()
    folder = root / "generators" / f"{name}-{fit_key(cls, params, seq)}"
    with folder_lock(folder, on_wait=logger.warning, lock_file=root / "locks" / f"fit-{folder.name}.lock"):
        if folder.is_dir() and (folder / "config.json").is_file() and not refit:
            logger.info("fit of %s: cached in %s", name, folder)
            loaded = cls.load(folder)
            loaded.config = generator.config  # runtime-only fields (progress, device) from this call
            return loaded
        resume = folder.with_name(folder.name + ".resume")
        if "checkpoint_dir" in {f.name for f in dataclasses.fields(cls.config_class)} and not params.get("checkpoint_dir"):
            generator = cls.from_params({**params, "checkpoint_dir": str(resume)})
        generator.fit(seq)
        with atomic_directory(folder, overwrite=True) as tmp:
            generator.save(tmp)
        shutil.rmtree(resume, ignore_errors=True)
    return generator
