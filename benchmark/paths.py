"""Where the harness keeps downloaded data, weights, fitted models and stage outputs."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """``$SYNTHVID_CACHE`` or ``~/.cache/synthvid``: datasets, metric weights, features, fitted generators."""
    return Path(os.environ.get("SYNTHVID_CACHE", Path.home() / ".cache" / "synthvid")).expanduser()


def require_writable(target: Path, what: str) -> None:
    """Fail now, naming ``target``, when the folder that will hold it cannot be written (read-only place, a
    file in the way), rather than with a traceback about a temporary name after expensive work. ``what``
    says which argument or setting ``target`` came from."""
    anchor = target.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ValueError(f"{target}: cannot create {what}, {anchor} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".synthvid-probe.", dir=anchor)
    except OSError as exc:
        raise ValueError(f"{target}: cannot write {what} here ({exc.strerror})") from None
    os.rmdir(probe)


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
