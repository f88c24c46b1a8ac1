"""Injected regressions ("mutants") that prove the CI gate can fail (``scripts/gate_mutants.sh``).

Mutation testing is how a test suite shows it can fail: break the code on purpose and check that the suite
notices. Each mutant here is a small, realistic regression of one part of the protocol, switched on by
``SYNTHVID_MUTANT=<name>`` and by nothing else; the variable exists only for this purpose and must never be
set for a result anyone reads. While it is set:

- every stage folder's cache key includes the mutant's name (``benchmark.stages.Stages.folder``), so a mutant
  result is never served to an unmutated run and an unmutated cached result never hides a mutant;
- every MLflow run carries a ``mutant`` tag (``benchmark.experiment.start_run``), and ``export`` refuses to
  bundle such a run.

Base layer: standard library only, so that any plug-in can ask ``active(NAME)`` cheaply.
"""

from __future__ import annotations

import os

MUTANT_ENV = "SYNTHVID_MUTANT"

#: name -> what the regression breaks and which part of the gate should notice it
MUTANTS: dict[str, str] = {
    "bvdm-no-flow": "BVDM drops the texture the flow carried from a cell's previous frame: a continuing "
                    "frame starts from its bare mask and gets only t_next denoising steps (expected: FID and "
                    "FVD up)",
    "shifted-masks": "the StarDist segmenter trains on label images shifted by 4 px down and right "
                     "(expected: SEG down, and TRA with it)",
    "swapped-intensity-map": "realism features of the synthetic videos pass the frozen intensity map's lo and hi "
                             "in swapped order (an argument-order slip: crops come out inverted) (expected: FID "
                             "and FVD up). A milder mis-map is below what the gate can see: mapping GOWT1 by "
                             "its own percentiles or by the dtype's full range (half as bright) moved FID by "
                             "less than one seed SD (117 -> 126 at N = 100 crops, 2026-12-06); InceptionV3 "
                             "features barely notice a global brightness change",
    "random-links": "the tracker links each detection to a random detection of the previous frame "
                    "(expected: TRA down)",
}

#: the pixel shift of ``shifted-masks`` (rows, columns): a few pixels, as a mis-registered annotation would be
SHIFT_PX = (4, 4)


def current() -> str | None:
    """The active mutant's name, None when ``SYNTHVID_MUTANT`` is unset or empty; an unknown name is one
    ValueError line naming the variable and the known mutants (a typo must not silently run unmutated)."""
    raw = os.environ.get(MUTANT_ENV, "").strip()
    if not raw:
        return None
    if raw not in MUTANTS:
        raise ValueError(f"{MUTANT_ENV}={raw!r}: unknown mutant (known: {', '.join(sorted(MUTANTS))})")
    return raw


def active(name: str) -> bool:
    """Whether the mutant ``name`` (a key of ``MUTANTS``) is switched on."""
    if name not in MUTANTS:
        raise KeyError(f"no mutant {name!r}")
    return current() == name
