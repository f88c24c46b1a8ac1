"""Training checkpoints that resume a fit bit for bit: shared by the BVDM DDPM and flow and the CellCycleGAN.

One folder per training loop holds ``checkpoint-<step>.safetensors`` files (``benchmark.safe_weights``: the
state's tensors, its other fields as JSON in the header; no pickle), each recorded in the folder's
``SHA256SUMS`` and checked before it is read: a changed or unrecorded checkpoint is IGNORED with a warning
(the loop resumes from an older one or starts over), never loaded. The header also carries, readable
without loading a tensor (``progress``):

- ``fingerprint``: the training config and data (``training_fingerprint``): a checkpoint resumes only the
  run it belongs to; others in the folder are left alone;
- ``step`` and ``total``: how far the run got, of how many steps;
- ``part``: which network (``ddpm``, ``flow``, ``gan``).

A loop resumes from its newest checkpoint (``Checkpoints.latest``) with the RNG states it saved, so it ends
where an uninterrupted run would have (same machine). ``Checkpoints.stop_at_deadline`` is the budget check
after every step (``benchmark.budget``): it writes the current step and raises ``BudgetExhausted``.
Inside ``SYNTHVID_RESUME_ROOT`` (a folder committed to git) only the newest checkpoint is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from benchmark import budget
from benchmark.checksums import record_sha256
from benchmark.safe_weights import load_state, read_metadata, save_state

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_SUFFIX = ".safetensors"
KEEP = 2  # checkpoints kept in a private folder; 1 inside SYNTHVID_RESUME_ROOT (committed: ~16 MB each)


def training_fingerprint(config: Any, *arrays: np.ndarray,
                         leave_out: Iterable[str] = ("iterations", "checkpoint_every")) -> str:
    """Hash of a training config (a dataclass) and its data arrays (by shape and float32 bytes).

    ``iterations`` and ``checkpoint_every`` are left out by default: nothing in a step depends on them (no
    LR schedule), so a longer run may continue a shorter one's checkpoints.
    """
    skip = set(leave_out)
    fields = {k: v for k, v in asdict(config).items() if k not in skip}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return digest.hexdigest()[:16]


def step_of(path: Path) -> int:
    """The step in a checkpoint's name (ValueError when it names none)."""
    return int(path.name.removeprefix(CHECKPOINT_PREFIX).removesuffix(CHECKPOINT_SUFFIX))


def checkpoint_files(directory: Path) -> list[Path]:
    """Every ``checkpoint-*.safetensors`` in ``directory`` (none when it does not exist)."""
    return sorted(directory.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}")) if directory.is_dir() else []


def checked_header(path: Path, label: str) -> dict[str, str] | None:
    """The header of a checkpoint whose name and sha256 check out; None (with a warning) otherwise."""
    try:
        step = step_of(path)
        header = read_metadata(path)
    except (ValueError, OSError, SafetensorError) as error:
        logger.warning("%s: ignoring unreadable checkpoint %s (%s)", label, path, error)
        return None
    return header if header.get("step") == str(step) else None


def checkpoints(directory: Path, fingerprint: str, label: str = "training") -> list[Path]:
    """This run's checkpoints in ``directory``, oldest first (others' are left alone and ignored)."""
    found = []
    for path in checkpoint_files(directory):
        header = checked_header(path, label)
        if header is not None and header.get("fingerprint") == fingerprint:
            found.append((step_of(path), path))
    return [path for _, path in sorted(found)]


def capture(step: int, stateful: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A checkpoint's state after ``step``: each object of ``stateful`` under its name (a ``torch.Generator``
    by ``get_state()``, anything else by ``state_dict()``: networks, optimisers, EMA), the global torch RNG
    state, and ``extra`` (losses, histories, other RNGs) as given. ``restore`` is its inverse."""
    state: dict[str, Any] = {"step": step, "torch_rng": torch.get_rng_state(), **extra}
    for name, thing in stateful.items():
        state[name] = thing.get_state() if isinstance(thing, torch.Generator) else thing.state_dict()
    return state


def restore(state: Mapping[str, Any], stateful: Mapping[str, Any]) -> int:
    """Load a ``capture``d state back into the same named objects and the global torch RNG; returns the step
    to go on from (the one after the checkpoint's)."""
    for name, thing in stateful.items():
        if isinstance(thing, torch.Generator):
            thing.set_state(state[name])
        else:
            thing.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]) + 1


def keep_count(directory: Path) -> int:
    """How many checkpoints a loop keeps in ``directory``: 1 inside ``SYNTHVID_RESUME_ROOT`` (it is
    committed, so every extra one costs the repository), else ``KEEP``."""
    root = budget.resume_root()
    inside = root is not None and directory.resolve().is_relative_to(root.resolve())
    return 1 if inside else KEEP


def progress(folder: Path) -> dict[str, tuple[int, int | None]]:
    """``{part: (step, total)}`` of the newest checkpoint of each part in ``folder`` and its subfolders
    (headers only, sha256-checked; a part without ``part`` in its header is named by its subfolder, or
    ``ddpm`` at the top: checkpoints written before the header had it)."""
    out: dict[str, tuple[int, int | None]] = {}
    for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else []:
        for path in checkpoint_files(directory):
            header = checked_header(path, str(folder))
            if header is None:
                continue
            part = header.get("part") or (directory.name if directory != folder else "ddpm")
            total = int(header["total"]) if header.get("total", "").isdigit() else None
            if part not in out or step_of(path) > out[part][0]:
                out[part] = (step_of(path), total)
    return out


class Checkpoints:
    """One training loop's checkpoints: the newest to resume from, writing (rotated), the deadline stop.

    ``directory`` None: nothing is read or written (a stop at the deadline then says no checkpoint exists).
    """

    def __init__(self, directory: str | Path | None, fingerprint: str, part: str, total: int, label: str) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.fingerprint, self.part, self.total, self.label = fingerprint, part, total, label
        self.saved = checkpoints(self.directory, fingerprint, label) if self.directory is not None else []
        self.keep = keep_count(self.directory) if self.directory is not None else KEEP

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint's state (on CPU), or None when there is none to resume from."""
        if not self.saved:
            return None
        state = load_state(self.saved[-1])
        logger.info("%s: resuming from %s (step %d of %d)", self.label, self.saved[-1], int(state["step"]),
                    self.total)
        return state

    def write(self, step: int, state: dict[str, Any]) -> Path | None:
        """``checkpoint-<step>.safetensors`` (atomic), then the oldest beyond ``keep`` removed and unrecorded."""
        if self.directory is None:
            return None
        if self.saved and step_of(self.saved[-1]) == step:
            return self.saved[-1]  # this step is on disk already (a regular checkpoint, then the deadline)
        self.directory.mkdir(parents=True, exist_ok=True)
        header = {"fingerprint": self.fingerprint, "step": str(step), "part": self.part, "total": str(self.total)}
        self.saved.append(save_state(state, self.directory / f"{CHECKPOINT_PREFIX}{step}{CHECKPOINT_SUFFIX}",
                                     metadata=header))
        if len(self.saved) > self.keep:
            while len(self.saved) > self.keep:
                self.saved.pop(0).unlink(missing_ok=True)
            record_sha256([], self.directory)  # drop the removed files' records (the folder may be committed)
        return self.saved[-1]

    def stop_at_deadline(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """After step ``step``: past the deadline (``benchmark.budget``) and not at the last step, write this
        step (``state()`` builds it) and raise ``BudgetExhausted``."""
        if step >= self.total or not budget.deadline_reached():
            return
        path = self.write(step, state())
        raise budget.BudgetExhausted(self.label, step, self.total, path)
