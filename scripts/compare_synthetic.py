"""Real vs synthetic statistics for a generator fitted on GOWT1 01 and HeLa 01 (a table with tolerances).

Usage: .venv/bin/python scripts/compare_synthetic.py [--generator mitogen] [--data-root ../shared/assets/ctc]
       [--frames 92] [--out /tmp/compare] [--seed 0] [--datasets Fluo-N2DH-GOWT1 Fluo-N2DL-HeLa]

Fits (cached like the CLI), generates one sequence at the real frame size, and compares: cells per frame
(t = 0, middle, last, mean relative error), nucleus area and eccentricity (KS statistic, cells not
touching the border), frame-to-frame centroid displacement (KS, medians), division count, SNR and
contrast ratio (CR - 1, since CR is ~1.02 on HeLa). Also prints the generation wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import stats
from skimage.measure import regionprops

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, full_masks
from benchmark.datasets import resolve_dataset
from generators.base import GenerateSpec
from generators.fit_cache import fitted_generator
from generators.imaging import snr_cr
from generators.masks.scene import children_of, tra_centroids

TOL = {"count": 0.25, "ks_area": 0.2, "ks_ecc": 0.2, "ks_disp": 0.25, "divisions": 0.35, "snr": 0.25, "cr": 0.25}


def shape_stats(labels_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    areas, eccs = [], []
    for labels in labels_list:
        h, w = labels.shape
        for r in regionprops(labels):
            y0, x0, y1, x1 = r.bbox
            if y0 == 0 or x0 == 0 or y1 == h or x1 == w:
                continue
            areas.append(r.area)
            eccs.append(r.eccentricity)
    return np.asarray(areas, float), np.asarray(eccs, float)


def displacements(centroids: dict[int, dict[int, tuple[float, float]]]) -> np.ndarray:
    out = []
    for t, cells in centroids.items():
        nxt = centroids.get(t + 1, {})
        out += [float(np.hypot(nxt[k][0] - y, nxt[k][1] - x)) for k, (y, x) in cells.items() if k in nxt]
    return np.asarray(out)


def counts_per_frame(seq: CTCSequence, n: int) -> np.ndarray:
    return np.array([sum(1 for tr in seq.tracks.values() if tr.begin <= t <= tr.end) for t in range(n)], float)


def compare(name: str, data_root: str | None, generator: str, frames: int, out: Path, seed: int = 0) -> list[tuple]:
    real = CTCSequence(resolve_dataset(name, data_root), "01")
    gen = fitted_generator(generator, {"progress": False}, real)
    start = time.perf_counter()
    syn_dir = gen.generate(GenerateSpec(1, frames, None, seed=seed), out / f"{name}-seed{seed}")
    seconds = time.perf_counter() - start
    syn = CTCSequence(syn_dir, "01")
    picks_r = annotated_frames(real)
    picks_r = [picks_r[i] for i in np.linspace(0, len(picks_r) - 1, min(10, len(picks_r))).astype(int)]
    picks_s = list(np.linspace(0, frames - 1, 10).astype(int))
    real_masks = {t: full_masks(real, t) for t in picks_r}
    syn_masks = {t: syn.tra(t) for t in picks_s}
    ra, re = shape_stats(list(real_masks.values()))
    sa, se = shape_stats(list(syn_masks.values()))
    rd, sd = displacements(tra_centroids(real)), displacements(tra_centroids(syn))
    rc, sc = counts_per_frame(real, real.n_frames), counts_per_frame(syn, frames)
    n = min(len(rc), len(sc))
    count_err = float(np.mean(np.abs(sc[:n] - rc[:n]) / rc[:n]))
    rdiv = sum(1 for k in children_of(real.tracks).values() if len(k) >= 2)
    sdiv = sum(1 for k in children_of(syn.tracks).values() if len(k) >= 2)
    rs = np.array([snr_cr(real.image(t), m) for t, m in real_masks.items()])
    ss = np.array([snr_cr(syn.image(t), m) for t, m in syn_masks.items()])
    r_snr, s_snr = float(np.median(rs[:, 0])), float(np.median(ss[:, 0]))
    r_cr, s_cr = float(np.median(rs[:, 1])), float(np.median(ss[:, 1]))

    def rel(a: float, b: float) -> float:
        return abs(b - a) / max(abs(a), 1e-9)

    rows = [
        (name, "cells t=0 / mid / last", f"{rc[0]:.0f} / {rc[n // 2]:.0f} / {rc[n - 1]:.0f}",
         f"{sc[0]:.0f} / {sc[n // 2]:.0f} / {sc[n - 1]:.0f}", f"mean rel err {count_err:.2f}", count_err <= TOL["count"]),
        (name, "nucleus area px (median)", f"{np.median(ra):.0f}", f"{np.median(sa):.0f}",
         f"KS {stats.ks_2samp(ra, sa).statistic:.2f}", stats.ks_2samp(ra, sa).statistic <= TOL["ks_area"]),
        (name, "eccentricity (median)", f"{np.median(re):.2f}", f"{np.median(se):.2f}",
         f"KS {stats.ks_2samp(re, se).statistic:.2f}", stats.ks_2samp(re, se).statistic <= TOL["ks_ecc"]),
        (name, "displacement px/frame (median)", f"{np.median(rd):.2f}", f"{np.median(sd):.2f}",
         f"KS {stats.ks_2samp(rd, sd).statistic:.2f}", stats.ks_2samp(rd, sd).statistic <= TOL["ks_disp"]),
        (name, f"divisions in {n} frames", f"{rdiv}", f"{sdiv}", f"rel {rel(rdiv, sdiv):.2f}",
         rel(rdiv, sdiv) <= TOL["divisions"] or abs(rdiv - sdiv) <= 2),
        (name, "SNR", f"{r_snr:.1f}", f"{s_snr:.1f}", f"rel {rel(r_snr, s_snr):.2f}", rel(r_snr, s_snr) <= TOL["snr"]),
        (name, "CR (CR-1 compared)", f"{r_cr:.3f}", f"{s_cr:.3f}", f"rel {rel(r_cr - 1, s_cr - 1):.2f}",
         rel(r_cr - 1, s_cr - 1) <= TOL["cr"]),
        (name, f"generation time {frames} frames {syn.frame_shape[0]}x{syn.frame_shape[1]}", "", f"{seconds:.0f} s",
         "", True),
    ]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="mitogen")
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent / "shared/assets/ctc"))
    p.add_argument("--datasets", nargs="+", default=["Fluo-N2DH-GOWT1", "Fluo-N2DL-HeLa"])
    p.add_argument("--frames", type=int, default=92)
    p.add_argument("--out", default="/tmp/compare_synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic video")
    args = p.parse_args()
    rows = []
    for name in args.datasets:
        rows += compare(name, args.data_root, args.generator, args.frames, Path(args.out), args.seed)
    print("| dataset | statistic | real | synthetic | difference | within tolerance |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row[:5]) + f" | {'yes' if row[5] else 'NO'} |")
    print("tolerances: " + ", ".join(f"{k} {v}" for k, v in TOL.items()))


if __name__ == "__main__":
    main()
