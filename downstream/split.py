"""The one train/validation split of the downstream models (StarDist segmenter and tracker).

Whole sequences are held out when there are two or more (validation then measures transfer to an unseen
video, as the held-out real sequence does); a single sequence gives up its last items instead (the end of
the video, never interleaved frames, which would leak near-duplicates into validation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def holdout_split(groups: Sequence[Sequence[T]], n_val: float) -> tuple[list[T], list[T]]:
    """(train, validation) items from per-sequence item lists ``groups``.

    With >= 2 groups: the last ``round(n_val * groups)`` groups (at least 1, at most all but one) validate.
    With one group: its last ``ceil(n_val * items)`` items (at least 1, at most all but one) validate.
    """
    if not groups:
        raise ValueError("holdout_split: no sequences to split")
    if len(groups) >= 2:
        n_hold = min(len(groups) - 1, max(1, round(n_val * len(groups))))
        return [x for g in groups[:-n_hold] for x in g], [x for g in groups[-n_hold:] for x in g]
    items = list(groups[0])
    if len(items) < 2:
        raise ValueError("holdout_split: need at least 2 items to hold one out for validation")
    n_hold = min(len(items) - 1, max(1, math.ceil(n_val * len(items))))
    return items[:-n_hold], items[-n_hold:]
