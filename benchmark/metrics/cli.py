"""``python -m benchmark metrics seg-tra|realism|texture-carry``: parse, delegate, print a table, optionally log to MLflow."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from benchmark import experiment
from benchmark.config import finite_float, int_at_least, non_negative_int, positive_int
from benchmark.ctc import CTCSequence, list_sequences
from benchmark.ctc.validate import check_input_sequence
from benchmark.datasets import DATASETS
from benchmark.io import atomic_write_bytes


def add_metrics_commands(subparsers) -> None:
    parser = subparsers.add_parser("metrics", help="score a CTC result (SEG/DET/TRA) or realism (FID/FVD/KID/KVD)")
    sub = parser.add_subparsers(dest="metrics_command", required=True)

    seg_tra = sub.add_parser("seg-tra", help="SEG, DET, TRA, LNK and AOGM of NN_RES against NN_GT (py-ctcmetrics)")
    seg_tra.add_argument("--res", required=True, help="result folder (maskTTT.tif + res_track.txt)")
    seg_tra.add_argument("--gt", required=True, help="GT folder NN_GT (TRA/ and SEG/)")
    seg_tra.add_argument("--threads", type=positive_int, default=1, help="py-ctcmetrics worker processes")
    _common(seg_tra)
    seg_tra.set_defaults(func=_cmd_seg_tra)

    realism = sub.add_parser("realism", help="FID/KID on cell crops, FVD/KVD on cell clips, with track-bootstrap CIs")
    realism.add_argument("--real", required=True, help="real sequence folder (…/01) or dataset folder (+ --real-seq)")
    realism.add_argument("--real-seq", default="01")
    realism.add_argument("--synthetic", required=True, nargs="+",
                         help="synthetic sequence folder(s) or dataset folder(s) (all sequences)")
    realism.add_argument("--intensity", nargs=2, type=finite_float, metavar=("LO", "HI"),
                         help="frozen intensity constants (default: the dataset's frozen map when the real folder "
                         "is a registered dataset, else P0.5/P99.9 of the real sequence)")
    realism.add_argument("--clip-mode", default="track", choices=("track", "lineage"),
                         help="FVD clips inside one track, or along mother -> one daughter (default: track)")
    realism.add_argument("--max-crops", type=int_at_least(2), help="cap per sequence (>= 2)")
    realism.add_argument("--max-clips", type=int_at_least(2), help="cap per sequence (>= 2)")
    realism.add_argument("--n-bootstrap", type=non_negative_int, default=200,
                         help="interval replicates (0: no intervals; default 200)")
    realism.add_argument("--no-fid", action="store_true")
    realism.add_argument("--no-fvd", action="store_true")
    # features only (the metric weights stay in the default cache): not the CLI-wide root of add_cache_argument
    realism.add_argument("--cache", "--cache-dir", dest="cache_dir", metavar="DIR",
                         help="feature cache (default: $SYNTHVID_CACHE, else ~/.cache/synthvid)")
    _common(realism)
    realism.set_defaults(func=_cmd_realism)

    carry = sub.add_parser("texture-carry", help="how much of each cell's texture survives from frame to frame "
                           "(benchmark.metrics.temporal)")
    carry.add_argument("sequences", nargs="+", help="sequence folder(s) (…/01) or dataset folder(s) (all sequences)")
    _common(carry)
    carry.set_defaults(func=_cmd_texture_carry)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="also write the result dict to this file")
    parser.add_argument("--mlflow", action="store_true", help="log the numbers to MLflow (benchmark.experiment)")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--dataset", default="adhoc", help="dataset name for the MLflow experiment")


def _sequences(path: str, default_name: str | None) -> list[CTCSequence]:
    folder = Path(path)
    if re.fullmatch(r"\d\d", folder.name) and folder.is_dir():
        return [CTCSequence(folder.parent, folder.name)]
    if default_name is not None:
        return [CTCSequence(folder, default_name)]
    return [CTCSequence(folder, name) for name in list_sequences(folder)]


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}s}  {v}" for k, v in rows)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.5f}"
    return str(value)


def _ci_text(result: dict, metric: str) -> str:
    """``95% CI [low, high]``, or the reason there is none (``n/a (1 track on a side: ...)``), never ``[nan, nan]``."""
    low, high = result.get(f"{metric}_ci_low"), result.get(f"{metric}_ci_high")
    if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
        return f"95% CI [{_fmt(low)}, {_fmt(high)}]"
    return f"95% CI {result.get(f'{metric}_ci_reason') or 'n/a (no interval computed)'}"


def _finish(args, result: dict, run_name: str, config: dict) -> int:
    if args.json:  # atomic: a half-written JSON never looks like a result
        atomic_write_bytes(Path(args.json), json.dumps(result, indent=2, default=str).encode())
    if args.mlflow:
        with experiment.start_run(args.run_name or run_name, args.dataset, config=config):
            experiment.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
    return 0


def _cmd_seg_tra(args) -> int:
    from benchmark.metrics.ctc import score_tracking

    result = score_tracking(args.res, args.gt, threads=args.threads)
    print(f"CTC metrics (py-ctcmetrics) {args.res} vs {args.gt}")  # the scores are the result: stdout
    print(_table([(k, _fmt(v)) for k, v in result.items()]))
    return _finish(args, result, "metrics-seg-tra", {"res": args.res, "gt": args.gt})


def _cmd_realism(args) -> int:
    import torch

    from benchmark.metrics.realism import RealismConfig, realism_scores, reference_intensity_map

    torch.set_num_threads(min(2, torch.get_num_threads()))
    real = _sequences(args.real, args.real_seq)[0]
    synthetic = [s for path in args.synthetic for s in _sequences(path, None)]
    for seq in [real, *synthetic]:  # a broken frame (NaN pixels, bad labels) is one line, never a silent score
        check_input_sequence(seq.dataset_dir, seq.name)
    intensity, source = (tuple(args.intensity), "--intensity") if args.intensity else (None, "")
    if intensity is None and real.dataset_dir.name in DATASETS:
        intensity, source = reference_intensity_map(real.dataset_dir.name, [real])
    config = RealismConfig(intensity_range=intensity, max_crops=args.max_crops, max_clips=args.max_clips,
                           n_bootstrap=args.n_bootstrap, fid=not args.no_fid, fvd=not args.no_fvd,
                           clip_mode=args.clip_mode)
    result = realism_scores(real, synthetic, config, args.cache_dir)
    rows = []
    for metric, n_key, flag in (("fid", "n_fid", "fid_rank_deficient"), ("kid", "n_fid", None),
                                ("fvd", "n_fvd", "fvd_rank_deficient"), ("kvd", "n_fvd", None)):
        if metric not in result:
            continue
        ci = _ci_text(result, metric)
        note = "  RANK-DEFICIENT (N below minimum; not comparable)" if flag and result.get(flag) else ""
        rows.append((f"{metric.upper()} (N={result[n_key]})", f"{_fmt(result[metric])}  {ci}{note}"))
    if result.get("fid_inf") is not None:
        rows.append(("FID_inf (1/N extrapolation)", _fmt(result["fid_inf"])))
    rows.append(("intensity lo/hi", f"{result['intensity_lo']}/{result['intensity_hi']} "
                 f"({source or 'P0.5/P99.9 of the real sequence'})"))
    for name in ("fid", "fvd"):
        if f"{name}_detector" in result:
            rows.append((f"{name} detector", f"{result[name + '_detector']} ({result[name + '_weight_route']})"))
    from benchmark.metrics.intervals import INTERVAL_SUMMARY  # scipy.stats: not at --help time

    print(f"realism: real {result['real']} vs synthetic {result['synthetic']} ({INTERVAL_SUMMARY})")
    print(_table(rows))
    params = {k: v for k, v in vars(args).items() if k != "func"}
    return _finish(args, result, "metrics-realism", params)


def _cmd_texture_carry(args) -> int:
    from benchmark.metrics.temporal import texture_carry

    sequences = []
    for path in args.sequences:
        found = _sequences(path, None)
        if not found:
            raise ValueError(f"{path}: no NN sequence folder in it to measure")
        sequences += found
    for seq in sequences:  # a broken frame (NaN pixels, bad labels) is one line, never a silent score
        check_input_sequence(seq.dataset_dir, seq.name)
    result: dict[str, float | int] = {}
    rows = []
    names = [f"{seq.dataset_dir.name}/{seq.name}" for seq in sequences]
    if len(set(names)) < len(names):  # several runs' ".../synthetic/01": the short names would overwrite each other
        names = [str(seq.dataset_dir / seq.name) for seq in sequences]
    for seq, name in zip(sequences, names, strict=True):
        carry = texture_carry(seq)
        result.update({f"{name}/texture_carry": carry.mean, f"{name}/texture_carry_sd": carry.sd,
                       f"{name}/texture_carry_pairs": carry.n_pairs})
        rows.append((name, f"{_fmt(carry.mean)}  SD {_fmt(carry.sd)}  ({carry.n_pairs} cell-frame pairs)"))
    print("texture carry-over (interior correlation of a cell between consecutive frames)")  # the result: stdout
    print(_table(rows))
    return _finish(args, result, "metrics-texture-carry", {"sequences": args.sequences})
