"""Frame-to-frame assignment (augmented LAP with births and deaths), division attachment, track building.

Per frame pair t -> t+1 the decision is local: a one-to-one set of links solved exactly with
``scipy.optimize.linear_sum_assignment`` on Jaqaman's augmented cost matrix (link cost -log p, each
side of a birth/death costs -log(tau)/2, so an isolated link is kept only when p > tau), then
divisions: a mother whose daughters were left as births is split when the division classifier's
probability beats its threshold (greedy by probability, two daughters per mother, each detection used
once). Tracks are then built frame by frame and written as a CTC result (always valid: the writer
derives B/E from the labels written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from downstream.tracker.features import FramePair, candidates_of, division_features


@dataclass
class PairDecision:
    """What happens between t and t+1: continuations i -> j and divisions i -> (j1, j2) (row indices)."""

    links: dict[int, int] = field(default_factory=dict)
    divisions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def edges(self) -> set[tuple[int, int, bool]]:
        """(i, j, is_parent_link) edges, the units the AOGM edge costs count."""
        out = {(i, j, False) for i, j in self.links.items() if i not in self.divisions}
        out |= {(i, j, True) for i, pair in self.divisions.items() for j in pair}
        return out


def assign(n_a: int, n_b: int, pairs: np.ndarray, cost: np.ndarray, alternative: float) -> dict[int, int]:
    """Optimal one-to-one links i -> j with per-side birth/death cost ``alternative``; only listed pairs may link."""
    if n_a == 0 or n_b == 0 or len(pairs) == 0:
        return {}
    size = n_a + n_b
    matrix = np.full((size, size), np.inf)
    matrix[pairs[:, 0], pairs[:, 1]] = cost
    matrix[np.arange(n_a), n_b + np.arange(n_a)] = alternative  # i ends (death)
    matrix[n_a + np.arange(n_b), np.arange(n_b)] = alternative  # j starts (birth)
    matrix[n_a:, n_b:] = 0.0  # dummy-dummy block keeps every combination feasible
    rows, cols = linear_sum_assignment(matrix)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if r < n_a and c < n_b}


def link_by_probability(fp: FramePair, p_link: np.ndarray, tau: float) -> dict[int, int]:
    eps = 1e-9
    return assign(len(fp.a), len(fp.b), fp.pairs, -np.log(np.clip(p_link, eps, 1.0)), -0.5 * np.log(tau))


def division_hypotheses(fp: FramePair, links: dict[int, int], k_division: int) -> list[tuple[int, int, int]]:
    """(mother, daughter1, daughter2) triples consistent with the links: a linked mother plus one born
    detection, or an ended mother plus two born detections, all among the mother's nearest candidates."""
    born = set(range(len(fp.b))) - set(links.values())
    out: list[tuple[int, int, int]] = []
    for i in range(len(fp.a)):
        near_born = [j for j in candidates_of(fp, i, k_division) if j in born]
        if i in links:
            out += [(i, links[i], j) for j in near_born]
        else:
            out += [(i, j1, j2) for j1, j2 in combinations(near_born, 2)]
    return out


def attach_divisions(links: dict[int, int], hypotheses: list[tuple[int, int, int]], probs: np.ndarray | None,
                     tau: float) -> PairDecision:
    """Greedy division attachment on top of the LAP links (``probs`` None = no division model)."""
    decision = PairDecision(dict(links))
    if probs is None or not hypotheses:
        return decision
    used: set[int] = set()
    linked = set(links.values())
    for k in np.argsort(-probs, kind="stable"):
        if probs[k] <= tau:
            break
        mother, d1, d2 = hypotheses[k]
        if mother in decision.divisions or d1 in used or d2 in used:
            continue
        if mother not in links and (d1 in linked or d2 in linked):
            continue
        decision.divisions[mother] = (d1, d2)
        used |= {d1, d2}
    return decision


def decide(fps: Sequence[FramePair], link_probs: Sequence[np.ndarray], tau_link: float, tau_division: float,
           k_division: int, predict_division: Callable[[np.ndarray], np.ndarray] | None) -> list[PairDecision]:
    """Links then divisions for every frame pair; division probabilities come from ONE batched call
    (gradient-boosting prediction has a per-call cost per tree)."""
    links = [link_by_probability(fp, p, tau_link) for fp, p in zip(fps, link_probs, strict=True)]
    if predict_division is None:
        return [PairDecision(lk) for lk in links]
    hyps = [division_hypotheses(fp, lk, k_division) for fp, lk in zip(fps, links, strict=True)]
    rows = [division_features(fp, *h) for fp, hs in zip(fps, hyps, strict=True) for h in hs]
    probs = predict_division(np.stack(rows)) if rows else np.zeros(0)
    bounds = np.cumsum([0] + [len(h) for h in hyps])
    return [attach_divisions(lk, hs, probs[bounds[n]:bounds[n + 1]], tau_division)
            for n, (lk, hs) in enumerate(zip(links, hyps, strict=True))]


def random_decisions(fps: Sequence[FramePair], seed: int = 0) -> list[PairDecision]:
    """Each detection of t+1 linked to a random detection of t, one to one, no divisions: the gate's
    ``random-links`` mutant (``benchmark.mutants``), a tracker that has lost all its information."""
    rng = np.random.default_rng(seed)
    out = []
    for fp in fps:
        sources = rng.permutation(len(fp.a))
        out.append(PairDecision({int(i): int(j) for j, i in enumerate(sources[:len(fp.b)])}))
    return out


def build_tracks(masks: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                 decisions: Sequence[PairDecision]) -> tuple[list[np.ndarray], dict[int, int]]:
    """Relabel per-frame masks by track id; ``labels[t]`` maps row index -> mask label of frame t.

    Returns the track-labelled frames (uint32; the CTC writer casts and range-checks) and the {daughter track: mother track} map.
    """
    if len(decisions) != max(len(masks) - 1, 0):
        raise ValueError(f"{len(decisions)} frame-pair decisions for {len(masks)} frames")
    parents: dict[int, int] = {}
    next_id = 1
    previous: dict[int, int] = {}
    out: list[np.ndarray] = []
    for t, mask in enumerate(masks):
        current: dict[int, int] = {}
        if t > 0:
            decision = decisions[t - 1]
            for i, j in decision.links.items():
                if i not in decision.divisions:
                    current[j] = previous[i]
            for i, pair in decision.divisions.items():
                for j in pair:
                    current[j] = next_id
                    parents[next_id] = previous[i]
                    next_id += 1
        for row in range(len(labels[t])):
            if row not in current:
                current[row] = next_id
                next_id += 1
        lut = np.zeros(int(mask.max()) + 1 if mask.size else 1, dtype=np.uint32)
        for row, track in current.items():
            lut[int(labels[t][row])] = track
        out.append(lut[mask])
        previous = current
    return out, parents
