"""Where the harness keeps downloaded data, weights, fitted models and stage outputs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SYNTHVID_CACHE`` or ``~/.cache/synthvid``: datasets, metric weights, features, fitted generators."""
    return Path(os.environ.get("SYNTHVID_CACHE", Path.home() / ".cache" / "synthvid")).expanduser()
