"""Ship a fitted generator: pack its fit-cache folder into ``fits/<dataset>/<generator>-<profile>-<key>``.

Takes the fit that ``run --profile P`` (and ``generate --profile P``) would use for this generator and
dataset: the cached one, fitted here first when it is missing or has no ``fit_record.json`` (a fit made
before fits were recorded). Packs the model folder into ONE ``.safetensors`` file (``benchmark.shipped``)
and writes the card beside it: fit key, sha256, size, iterations, wall time, final losses, machine class
and CPU, the commit of the fit, and the fit's config. Refuses a file over 10 MB.

One command per generator and idempotent: a card of the same key whose file verifies is kept as it is;
a card of the same generator, profile and dataset with another key (stale after a code or version bump)
is removed with its file.

    .venv/bin/python scripts/ship_fit.py --generator bvdm --dataset Fluo-N2DH-GOWT1 --profile ci
    .venv/bin/python scripts/ship_fit.py --generator cellcyclegan --dataset Fluo-N2DH-GOWT1 --profile cpu
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.config import PARAM_HELP, parse_params  # noqa: E402
from benchmark.io import atomic_write_text, sha256_file  # noqa: E402
from benchmark.logs import cli_logging  # noqa: E402
from benchmark.paths import using_cache  # noqa: E402
from benchmark.shipped import MAX_FIT_BYTES, pack_folder, registry_root  # noqa: E402
from generators.fit_cache import (  # noqa: E402
    FIT_CACHE_VERSION,
    FIT_RECORD,
    fit_config,
    fit_folder,
    fit_key,
    fitted_generator,
    profile_fit_inputs,
)
from generators.registry import get_generator  # noqa: E402

logger = logging.getLogger("benchmark.ship_fit")  # under `benchmark`: cli_logging shows its INFO


def ship_fit(generator: str, dataset: str, profile: str, out: Path, overrides: dict[str, Any] | None = None,
             data_root: str | None = None) -> Path:
    """Pack the profile's fit of ``generator`` on ``dataset`` into ``out/<dataset>/``; returns the card."""
    cls = get_generator(generator)
    if not cls.needs_fit:
        raise ValueError(f"--generator {generator}: fits nothing, there is nothing to ship")
    params, seq = profile_fit_inputs(profile, dataset, generator, {**(overrides or {}), "progress": False},
                                     data_root)
    key = fit_key(cls, params, seq)
    folder = out / dataset
    card_path = folder / f"{generator}-{profile}-{key}.json"
    archive = card_path.with_suffix(".safetensors")
    if _still_valid(card_path, archive):
        logger.info("%s: already shipped, sha256 ok", archive)
        _remove_stale(folder, json.loads(card_path.read_text()))
        return card_path
    card_path.unlink(missing_ok=True)  # a card whose file is gone or damaged: fitted_generator must not take it
    cached = fit_folder(generator, params, seq)
    # a fit without its record (made before records existed) is fitted again, so the card can say what it cost
    fitted_generator(generator, params, seq, refit=cached.is_dir() and not (cached / FIT_RECORD).is_file())
    record = json.loads((cached / FIT_RECORD).read_text())
    location = archive.resolve().relative_to(registry_root().resolve()).as_posix() \
        if archive.resolve().is_relative_to(registry_root().resolve()) else str(archive)
    card = {"kind": "fit", "generator": generator, "dataset": dataset, "profile": profile, "fit_key": key,
            "fit_cache_version": FIT_CACHE_VERSION, "fit_version": cls.fit_version, "location": location,
            **{k: record.get(k) for k in ("iterations", "wall_s", "final_loss", "machine_class", "cpu", "commit",
                                          "fitted_at")},
            "fit_config": fit_config(cls, params)}
    pack_folder(cached, archive, card)
    size = archive.stat().st_size
    if size > MAX_FIT_BYTES:
        archive.unlink()
        raise ValueError(f"{archive}: {size / 1e6:.1f} MB, over the {MAX_FIT_BYTES / 1e6:.0f} MB budget of a shipped fit")
    card.update(sha256=sha256_file(archive), size_bytes=size)
    atomic_write_text(card_path, json.dumps(card, indent=1, default=str) + "\n")
    _remove_stale(folder, card)
    logger.info("shipped %s (%.2f MB, sha256 %s...)", archive, size / 1e6, card["sha256"][:16])
    return card_path


def _still_valid(card_path: Path, archive: Path) -> bool:
    try:
        return archive.is_file() and json.loads(card_path.read_text())["sha256"] == sha256_file(archive)
    except (OSError, ValueError, KeyError):
        return False


def _remove_stale(folder: Path, card: dict[str, Any]) -> None:
    """Cards (and files) of the same generator, profile and dataset with another fit key."""
    for other in folder.glob("*.json"):
        try:
            old = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        same = all(old.get(k) == card[k] for k in ("kind", "generator", "profile", "dataset"))
        if same and old.get("fit_key") != card["fit_key"]:
            other.with_suffix(".safetensors").unlink(missing_ok=True)
            other.unlink()
            logger.info("removed the stale %s (fit key %s)", other, old.get("fit_key"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True)
    parser.add_argument("--dataset", required=True, help="CTC dataset name, e.g. Fluo-N2DH-GOWT1")
    parser.add_argument("--profile", required=True, help="the profile whose fit to ship (ci, cpu, ...)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE|JSON", help=PARAM_HELP)
    parser.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    parser.add_argument("--cache", help="cache folder (default: $SYNTHVID_CACHE, else ~/.cache/synthvid)")
    parser.add_argument("--out", type=Path, default=registry_root() / "fits", help="default: the repository's fits/")
    args = parser.parse_args(argv)
    with cli_logging(logging.INFO):
        try:
            with using_cache(args.cache):
                card = ship_fit(args.generator, args.dataset, args.profile, args.out, parse_params(args.param),
                                args.data_root)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
