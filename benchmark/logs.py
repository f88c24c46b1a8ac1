"""Logging for ``python -m benchmark``: progress and status go to stderr through ``logging``; a command's
result (a table, a JSON line, the end-of-run summary) stays on stdout, so a script can pipe it.

Library modules only call ``logging.getLogger(__name__)``; the one place that attaches a handler is
:func:`cli_logging`, entered by ``benchmark.cli.main`` (never at import time, so that importing the harness
from a notebook or a test does not change how that program logs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: the harness's own top-level packages: their loggers follow -v/-q
PACKAGES = ("benchmark", "generators", "downstream", "reports")
#: chatty libraries held at WARNING unless -v (MLflow and alembic have handlers of their own)
THIRD_PARTY = ("mlflow", "matplotlib", "tensorflow", "urllib3", "alembic", "trackastra")
#: at INFO a line reads as the ``print`` it replaced; with -v it names its level and logger
PLAIN_FORMAT = "%(message)s"
VERBOSE_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: MLflow sets its logger's level from this variable when it is first imported (after ``main`` starts)
MLFLOW_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"


def _levels(level: int) -> dict[str, int]:
    """Logger name ('' = root) -> level for a CLI level: the harness at ``level``; everything else at
    WARNING, as Python's default shows it, unless -v (DEBUG) lifts it to INFO. Third-party DEBUG stays
    off even with -v: numba and matplotlib would bury the harness's own lines."""
    verbose = level <= logging.DEBUG
    levels = {"": logging.INFO if verbose else max(level, logging.WARNING)}
    if not verbose:
        levels.update(dict.fromkeys(THIRD_PARTY, max(level, logging.WARNING)))
    levels.update(dict.fromkeys(PACKAGES, level))
    return levels


@contextmanager
def cli_logging(level: int = logging.INFO, stream: TextIO | None = None) -> Iterator[logging.Handler]:
    """One stderr handler on the root logger for the duration of a CLI command, then the previous levels,
    handlers and ``MLFLOW_LOGGING_LEVEL`` back: ``main`` called many times in one process (the tests do)
    neither stacks handlers nor leaves its levels behind. ``stream``: another destination than stderr (a
    sweep task's log file: the task runs in a worker process whose stderr nobody reads)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # the current stderr: a redirect or pytest's capture
    handler.setFormatter(logging.Formatter(VERBOSE_FORMAT if level <= logging.DEBUG else PLAIN_FORMAT))
    levels = _levels(level)
    saved = {name: logging.getLogger(name).level for name in levels}
    saved_env = os.environ.get(MLFLOW_LEVEL_ENV)
    if "mlflow" in levels and saved_env is None:  # a user's own setting wins
        os.environ[MLFLOW_LEVEL_ENV] = logging.getLevelName(levels["mlflow"])
    root = logging.getLogger()
    root.addHandler(handler)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, value in saved.items():
            logging.getLogger(name).setLevel(value)
        if saved_env is None:
            os.environ.pop(MLFLOW_LEVEL_ENV, None)

