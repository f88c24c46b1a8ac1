"""The deadline a process must stop its fit by, and where fits keep the checkpoints that outlive it.

A campaign (``python -m benchmark campaign SPEC --budget M``) runs ``python -m benchmark run ...`` in
subprocesses; each gets the campaign's end as ``SYNTHVID_DEADLINE`` (UNIX time in seconds, a float).
A training loop calls ``deadline_reached()`` after every completed step; when it is true the loop writes
a checkpoint of that step and raises ``BudgetExhausted``, which the CLI turns into one line and exit status
75 (EX_TEMPFAIL): the same command, later, resumes from the checkpoint.

``SYNTHVID_RESUME_ROOT`` names the folder fits keep their resume checkpoints in
(``generators.fit_cache``): the campaign points it into the repository (``results/_resume/``) so a fit cut
short in one session continues in a fresh clone.

Base layer: standard library only, so any module may import it cheaply.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

DEADLINE_ENV = "SYNTHVID_DEADLINE"
RESUME_ROOT_ENV = "SYNTHVID_RESUME_ROOT"

_parsed: tuple[str | None, float | None] = (None, None)  # (raw value, parsed): parse once per value


def deadline() -> float | None:
    """``SYNTHVID_DEADLINE`` as UNIX seconds; None when unset or empty. A bad value is one ValueError line."""
    global _parsed
    raw = os.environ.get(DEADLINE_ENV)
    if raw == _parsed[0]:
        return _parsed[1]
    value: float | None = None
    if raw is not None and raw.strip():
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{DEADLINE_ENV}={raw!r}: not a UNIX time in seconds")
    _parsed = (raw, value)
    return value


def deadline_reached() -> bool:
    """True once the deadline has passed (False without one). Cheap: called after every training step."""
    limit = deadline()
    return limit is not None and time.time() >= limit


def resume_root() -> Path | None:
    """``SYNTHVID_RESUME_ROOT``: where fits keep resume checkpoints (None: beside the fit cache entry)."""
    raw = os.environ.get(RESUME_ROOT_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


class BudgetExhausted(Exception):  # noqa: N818 - named for what happened, as KeyboardInterrupt is
    """A training loop stopped at the deadline: what stopped, at which step of how many, and where the
    checkpoint to resume from is (or that none could be written)."""

    def __init__(self, what: str, step: int, total: int, checkpoint: Path | None) -> None:
        where = f"checkpoint {checkpoint}" if checkpoint is not None else \
            "no checkpoint could be written (no checkpoint folder)"
        super().__init__(f"{what} stopped after step {step} of {total}; {where}")
        self.what, self.step, self.total, self.checkpoint = what, step, total, checkpoint
