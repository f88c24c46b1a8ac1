"""Where the harness keeps downloaded data, weights, fitted models and stage outputs."""

from __future__ import annotations

import argparse
import os
import tempfile
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


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    """``--cache DIR``: the same option, meaning and default on every command that reads or writes the cache."""
    parser.add_argument("--cache", metavar="DIR", help="cache of datasets, metric weights, features and fitted "
                        "generators (default: $SYNTHVID_CACHE, else ~/.cache/synthvid)")


def use_cache(folder: str | None) -> None:
    """Make ``--cache DIR`` the process's cache root (``cache_dir()`` reads ``$SYNTHVID_CACHE``)."""
    if folder:
        os.environ["SYNTHVID_CACHE"] = str(Path(folder).expanduser())
