"""Where the harness keeps downloaded data, weights, fitted models and stage outputs."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """``$SYNTHVID_CACHE`` or ``~/.cache/synthvid``: datasets, metric weights, features, fitted generators."""
    return Path(os.environ.get("SYNTHVID_CACHE", Path.home() / ".cache" / "synthvid")).expanduser()


def require_writable(target: Path, what: str) -> None:
    """Fail now, naming ``target``, when the folder that will hold it cannot be written (read-only place, a
    file in the way), rather than with a traceback about a temporary name after expensive work. ``what``
    says which argument or setting ``target`` came from."""
    _probe(target, target.parent, what)


def require_writable_folder(folder: Path, what: str) -> None:
    """``require_writable`` for a folder the command writes INTO (the cache's ``generators/``): the folder
    itself when it exists (a read-only ``generators/`` inside a writable cache), else where it would be made."""
    _probe(folder, folder, what)


def _probe(target: Path, start: Path, what: str) -> None:
    """Create and remove a hidden folder in ``start`` or its nearest existing ancestor; one line naming
    ``target`` when that fails (the real writes would fail the same way, later)."""
    anchor = start
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ValueError(f"{target}: cannot create {what}, {anchor} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".synthvid-probe.", dir=anchor)
    except OSError as exc:
        raise ValueError(f"{target}: cannot write {what} here ({exc.strerror})") from None
    os.rmdir(probe)


#: the cache's folders a command writes: fitted generators, lock files, realism feature caches
CACHE_WRITES = ("generators", "locks", "features")


def require_cache_writable(parts: tuple[str, ...] = CACHE_WRITES) -> None:
    """Probe every cache folder the command will write, at its start (generate, run, oracle, sweep), so a
    read-only ``generators/`` fails now with one line naming it, not after the fit naming a temporary folder."""
    root = cache_dir()
    for part in parts:
        require_writable_folder(root / part, f"the cache's {part}/ (--cache / $SYNTHVID_CACHE)")


def add_cache_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """``--cache DIR``: the same option, meaning and default on every command that reads or writes the cache
    (``benchmark.cli`` enters ``using_cache`` around the command)."""
    parser.add_argument("--cache", *aliases, dest="cache", metavar="DIR", help="cache of datasets, metric weights, features and fitted "
                        "generators (default: $SYNTHVID_CACHE, else ~/.cache/synthvid)")


@contextmanager
def using_cache(folder: str | None) -> Iterator[None]:
    """``--cache DIR`` as the cache root of everything inside (``cache_dir()`` reads ``$SYNTHVID_CACHE``);
    the previous root comes back after. The CLI enters it around any command that has ``--cache``."""
    if not folder:
        yield
        return
    require_writable(Path(folder).expanduser() / "locks", f"--cache {folder}")  # a file or read-only: now, one line
    previous = os.environ.get("SYNTHVID_CACHE")
    os.environ["SYNTHVID_CACHE"] = str(Path(folder).expanduser())
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SYNTHVID_CACHE"]
        else:
            os.environ["SYNTHVID_CACHE"] = previous


def refuse_output_overlapping_inputs(out: str | Path, inputs: Iterable[str | Path | None], what: str) -> None:
    """Refuse (ValueError, one line naming both) an output folder ``out`` that IS, CONTAINS or LIES INSIDE any
    of the folders (or files) a command reads: ``--overwrite`` or a stage cache must never reach input data.

    Paths are compared resolved (symlinks followed, ``..`` collapsed; a folder not made yet resolves through
    its nearest existing parent), so a link or a relative spelling of the data does not slip through.
    ``inputs`` may hold None (an input the command does not have); ``what`` names the output's argument
    (``--out``). Every writing command calls this before any work: ``generate``, ``run``/``oracle``,
    ``report``, ``sweep`` (and ``export``)."""
    target = Path(out).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if target == source:
            relation = "is"
        elif target.is_relative_to(source):
            relation = "lies inside"
        elif source.is_relative_to(target):
            relation = "contains"
        else:
            continue
        raise ValueError(f"{out}: {what} {relation} the input {source}, which this command reads; "
                         "choose an output folder outside it (--overwrite never reaches input data)")
