"""``python -m benchmark generate``: fit a generator on a real training sequence (cached) and write data.

The fitted state comes from the one fit cache (``generators.fit_cache``), shared with ``run``'s fit
stage: a changed dataset or fit parameter refits, a repeated call (or one after ``run``) only generates.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.config import PARAM_HELP, parse_params, positive_int, seed_int
from benchmark.ctc import CTCSequence, list_sequences
from benchmark.ctc.validate import check_input_sequence
from benchmark.datasets import dataset_info, resolve_dataset
from benchmark.io import atomic_directory, atomic_write_bytes, folder_lock
from benchmark.paths import (
    add_cache_argument,
    cache_dir,
    refuse_output_overlapping_inputs,
    require_cache_writable,
    require_writable,
)
from generators.base import GenerateSpec, Generator
from generators.fit_cache import fitted_generator, profile_fit_inputs
from generators.registry import available_generators, get_generator

logger = logging.getLogger(__name__)

#: written into every ``generate --out`` folder: what wrote it and which entries are its own
MANIFEST = ".synthvid-generate.json"


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a previous ``generate`` into ``out``, or None when there is none (or it is unreadable)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_output_folder(out: Path, generator: str, overwrite: bool) -> None:
    """Refuse to replace anything that ``generate`` did not write itself for the same generator, unless
    ``overwrite``: a real dataset (or someone's files) in ``--out`` must never be lost to a typo."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    require_writable(out, "the output folder")
    if overwrite or not out.exists():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    manifest = _read_manifest(out)
    hint = "pass --overwrite to replace the whole folder"
    if manifest is None or manifest.get("command") != "generate":
        raise FileExistsError(f"{out}: folder is not empty and holds no earlier `generate` output; {hint}")
    if manifest.get("generator") != generator:
        raise FileExistsError(f"{out}: holds `generate` output of generator {manifest.get('generator')!r}, "
                              f"not {generator!r}; {hint}")
    foreign = sorted(set(entries) - set(manifest.get("entries", [])) - {MANIFEST})
    if foreign:
        raise FileExistsError(f"{out}: holds {', '.join(foreign[:3])} not written by `generate`; {hint}")


def generate_into(generator: Generator, spec: GenerateSpec, out: Path, record: dict[str, Any],
                  write: Callable[[Path], Any] | None = None) -> Path:
    """Run ``generator.generate`` (or ``write``) into a sibling temporary folder and swap it in for the WHOLE of
    ``out`` at the end, with a manifest: no stale sequence of an earlier call survives, nothing half-written
    is visible."""
    # the lock lives in the cache, not beside --out: the user's folder holds only what they asked for
    lock = cache_dir() / "locks" / f"generate-{hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]}.lock"
    with folder_lock(out, on_wait=logger.warning, lock_file=lock), atomic_directory(out, overwrite=True) as tmp:
        (write or (lambda folder: generator.generate(spec, folder)))(tmp)
        entries = sorted(p.name for p in tmp.iterdir())
        record["written"] = {name: CTCSequence(tmp, name).n_frames for name in list_sequences(tmp)}
        asked = {f"{i:02d}": spec.n_frames for i in range(1, spec.n_sequences + 1)}
        if record["written"] != asked and write is None:  # e.g. `real`: one sequence, as long as the real one
            logger.warning("%s wrote %s (sequence: frames), not the %d x %d frames asked",
                           record.get("generator", "the generator"), record["written"], spec.n_sequences,
                           spec.n_frames)
        manifest = {"command": "generate", **record, "entries": entries}
        atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
    return out


#: ``generate``'s defaults of the options that shape what is written (None in argparse: "given" is visible)
SPEC_DEFAULTS = {"frames": 92, "sequences": 2, "shape": None, "seed": 0}


def _refuse_unhonoured_options(args: argparse.Namespace, source: Path) -> None:
    """``folder`` copies an existing dataset as it is: an explicit --frames, --sequences, --shape or --seed
    would be silently ignored, so it is refused."""
    given = [f"--{name}" for name in SPEC_DEFAULTS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{given[0]}: generator 'folder' copies {source} as it is (its own sequences, frames and "
                         f"size); it cannot honour {', '.join(given)}")


def copy_dataset(source: Path, out: Path) -> Path:
    """Copy the CTC sequences of ``source`` (``NN``, ``NN_GT``, ``NN_ST``) into ``out``: what ``generate
    --generator folder`` writes."""
    for name in list_sequences(source):
        for suffix in ("", "_GT", "_ST"):
            if (source / f"{name}{suffix}").is_dir():
                shutil.copytree(source / f"{name}{suffix}", out / f"{name}{suffix}")
    return out


def run_generate(args: argparse.Namespace) -> int:
    folder = resolve_dataset(args.dataset, args.data_root, fetch=True)
    sequence = args.train_sequence or dataset_info(args.dataset).train_sequence
    seq = CTCSequence(folder, sequence)
    cls = get_generator(args.generator)
    params = parse_params(args.param)
    if args.profile:  # the params and (windowed) training sequence of `run --profile`: the run's fit key
        params, seq = profile_fit_inputs(args.profile, args.dataset, args.generator, params, args.data_root,
                                         args.train_sequence)
    params.setdefault("progress", not args.quiet)
    source = cls.from_params(params).source_folder()  # unknown or ill-typed parameters fail here, before any work
    out = Path(args.out)
    # before anything else, whatever --overwrite says: the output never is, holds or lies inside what is read
    refuse_output_overlapping_inputs(out, [folder, source], "--out")
    if source is not None:
        _refuse_unhonoured_options(args, source)
    check_output_folder(out, args.generator, args.overwrite)
    # the cache folders this call writes (a fit, generate's lock), probed before the fit, not after it
    require_cache_writable(("generators", "locks") if cls.needs_fit else ("locks",))
    check_input_sequence(folder, sequence)
    chosen = {name: default if getattr(args, name) is None else getattr(args, name)
              for name, default in SPEC_DEFAULTS.items()}
    spec = GenerateSpec(n_sequences=chosen["sequences"], n_frames=chosen["frames"],  # checked before the fit, too
                        shape=tuple(chosen["shape"]) if chosen["shape"] else None, seed=chosen["seed"])
    generator = fitted_generator(args.generator, params, seq, refit=args.refit)  # in --cache (the CLI sets the root)
    record = {"generator": args.generator, "dataset": args.dataset, "fitted_on": str(seq.image_dir),
              "spec": dataclasses.asdict(spec)}
    if source is None:
        written = generate_into(generator, spec, out, record)
    else:  # `folder`: validate, refuse real frames of the dataset, copy as it is
        from generators.folder import check_no_real_frames

        validated = generator.generate(spec, out)
        check_no_real_frames(validated, {f"{args.dataset} {name}": CTCSequence(folder, name)
                                         for name in list_sequences(folder)})
        record.update(source=str(validated), spec=None)
        written = generate_into(generator, spec, out, record, write=lambda tmp: copy_dataset(validated, tmp))
    print(json.dumps({**record, "out": str(written)}))  # the result: one JSON line on stdout for scripts
    return 0


def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``generate`` on the top-level CLI."""
    p = subparsers.add_parser("generate", help="fit a generator on a real training sequence and write a synthetic CTC dataset",
                              description="--generator folder --param path=DIR validates DIR, refuses one holding real "
                              "frames of the dataset, and copies it as it is into --out (no --frames/--sequences/"
                              "--shape/--seed). --out never is, holds or lies inside a folder the command reads.")
    p.add_argument("--generator", required=True, help=f"one of: {', '.join(available_generators())}")
    p.add_argument("--dataset", required=True, help="CTC dataset name, e.g. Fluo-N2DH-GOWT1")
    p.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    p.add_argument("--train-sequence", help="sequence to fit on (default: the dataset's training sequence, 01)")
    p.add_argument("--frames", type=positive_int, help="frames per synthetic sequence (default 92)")
    p.add_argument("--sequences", type=positive_int, help="number of synthetic sequences (01, 02, ...; default 2)")
    p.add_argument("--shape", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="frame size (default: the real one)")
    p.add_argument("--seed", type=seed_int, help="default 0")
    p.add_argument("--param", action="append", metavar="KEY=VALUE|JSON", help=PARAM_HELP)
    p.add_argument("--profile", help="fit as `run --profile` does (its generator params, --param on top, and its "
                   "window of the data): the same fit, cached or shipped (ci, cpu, cpu-paper, paper or a TOML)")
    add_cache_argument(p)
    p.add_argument("--refit", action="store_true", help="ignore a cached fitted state")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output dataset folder (replaced whole; a non-empty folder only when "
                   "it holds an earlier output of this generator, or with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if it holds other data")
    p.set_defaults(func=run_generate)
