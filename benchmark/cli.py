"""``python -m benchmark``: subcommands only parse arguments and delegate."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from benchmark import datasets
from benchmark.budget import BudgetExhausted
from benchmark.ctc import CTCFormatError, CTCSequence, frame_ranges
from benchmark.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    DatasetNotFound,
    describe_dataset,
    fetch_dataset,
    frozen_intensity_maps,
    resolve_dataset,
)
from benchmark.io import atomic_write_text
from benchmark.logs import cli_logging
from benchmark.paths import using_cache

logger = logging.getLogger(__name__)

#: (module, function) pairs that add their own subcommands to the parser
COMMAND_HOOKS = (
    ("benchmark.assets", "add_assets_commands"),
    ("generators.cli", "add_generate_command"),
    ("benchmark.metrics.cli", "add_metrics_commands"),
    ("benchmark.pipeline", "add_run_command"),
    ("reports.cli", "add_report_commands"),
    ("benchmark.bundle_cli", "add_bundle_commands"),
    ("benchmark.sweep", "add_sweep_command"),
    ("benchmark.campaign", "add_campaign_command"),
    ("benchmark.gate", "add_check_command"),
)


def _data_info(args: argparse.Namespace) -> int:
    """The facts of a dataset are the command's result: printed on stdout (not logged), whatever -q says."""
    folder = resolve_dataset(args.name, args.data_root)
    facts = describe_dataset(folder)
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    print(f"{args.name}: {folder}")
    for f in facts:
        print(f"  sequence {f['sequence']}: {f['frames']} frames of {_frame_kind(f)}, {f['frames_present']} present")
        print(f"    missing frames: {frame_ranges(f['missing_frames']) or 'none'}")
        print(f"    annotations: GT SEG {f['gt_seg_frames']} frames, GT TRA {f['gt_tra_frames']} frames, "
              f"ST SEG {f['st_seg_frames']} frames")
        if f["tracks"] is None:
            print("    lineage: unknown (no readable man_track.txt)")
        else:
            print(f"    lineage: {f['tracks']} tracks, {f['tracks_with_parent']} with a parent, "
                  f"{f['divisions']} dividing cells")
        cells = f["cells_per_frame"]
        if cells:
            print(f"    cells per frame (TRA): min {cells[0]}, mean {cells[1]:.1f}, max {cells[2]}")
        if f["intensity_range"] is not None:
            print(f"    intensity range: {f['intensity_range'][0]}..{f['intensity_range'][1]}")
        for problem in f["problems"]:
            print(f"    {problem}")
    return 0


def _frame_kind(facts: dict) -> str:
    """``1024x1024 uint8``, or every shape and dtype with its frame count when the frames differ."""
    if facts["shape"] is not None and facts["dtype"] is not None:
        return f"{facts['shape'][0]}x{facts['shape'][1]} {facts['dtype']}"
    if not facts["shapes"]:
        return "no readable raw frame"
    shapes = ", ".join(f"{k} ({n})" for k, n in facts["shapes"].items())
    dtypes = ", ".join(f"{k} ({n})" for k, n in facts["dtypes"].items())
    return f"MIXED shapes {shapes} and dtypes {dtypes}"


def _data_fetch(args: argparse.Namespace) -> int:
    print(fetch_dataset(args.name))  # the result: the unpacked folder, for a script to use
    return 0


def _data_list(args: argparse.Namespace) -> int:
    for info in DATASETS.values():
        print(f"{info.name:18s} {info.description}\n{'':18s} {info.url}")
    return 0


def _data_intensity_map(args: argparse.Namespace) -> int:
    """Derive a dataset's frozen intensity map (pooled P0.5/P99.9 of every raw frame of both training-set
    sequences) and compare it with the registry's; ``--write`` puts it into ``intensity_maps.toml``."""
    from benchmark.metrics.realism import intensity_range

    info = DATASETS[args.name]
    folder = resolve_dataset(args.name, args.data_root)
    sequences = [CTCSequence(folder, name) for name in (info.train_sequence, info.test_sequence)]
    lo, hi = intensity_range(sequences)
    dtype = sequences[0].dtype
    counts = " + ".join(str(len(s.frames)) for s in sequences)
    entry = {"lo": float(lo), "hi": float(hi), "dtype": str(dtype),
             "source": f"pooled P0.5/P99.9 of {'+'.join(s.name for s in sequences)}, {counts} frames"}
    maps = frozen_intensity_maps()
    frozen = maps.get(args.name)
    same = frozen is not None and (frozen["lo"], frozen["hi"], frozen["dtype"]) == (entry["lo"], entry["hi"], entry["dtype"])
    print(f"{args.name}: {lo:g}..{hi:g} ({dtype}; {entry['source']}); frozen: "
          + ("the same" if same else "none" if frozen is None else f"{frozen['lo']:g}..{frozen['hi']:g} ({frozen['dtype']})"))
    if not args.write or same:
        return 0
    if frozen is not None and not args.replace:
        raise ValueError(f"{datasets.INTENSITY_MAPS}: {args.name} already has a frozen map that differs; every realism score "
                         "of it was computed under that one: pass --replace to change it")
    maps[args.name] = entry
    atomic_write_text(datasets.INTENSITY_MAPS, _render_maps(maps))
    logger.info("wrote %s", datasets.INTENSITY_MAPS)
    return 0


def _render_maps(maps: dict[str, dict]) -> str:
    """``intensity_maps.toml`` with its header kept."""
    header = [line for line in datasets.INTENSITY_MAPS.read_text().splitlines() if line.startswith("#")]
    body = []
    for name in sorted(maps):
        entry = maps[name]
        body += ["", f'["{name}"]', f"lo = {float(entry['lo'])!r}", f"hi = {float(entry['hi'])!r}",
                 f'dtype = "{entry["dtype"]}"', f'source = "{entry["source"]}"']
    return "\n".join(header + body) + "\n"


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="named CTC datasets: list, fetch, info")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_sub.add_parser("list", help="known datasets and their official URLs").set_defaults(func=_data_list)
    fetch = data_sub.add_parser("fetch", help="download and unpack a dataset into the cache")
    fetch.add_argument("name", nargs="?", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    fetch.set_defaults(func=_data_fetch)
    info = data_sub.add_parser("info", help="sequences, frames present/missing, annotations, lineage, intensities")
    info.add_argument("name", nargs="?", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    info.add_argument("--data-root", help="folder holding <name>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=_data_info)
    imap = data_sub.add_parser("intensity-map", help="derive the realism protocol's frozen intensity map of a dataset "
                               "and compare it with benchmark/intensity_maps.toml")
    imap.add_argument("name", choices=sorted(DATASETS))
    imap.add_argument("--data-root", help="folder holding <name>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    imap.add_argument("--write", action="store_true", help="write the derived map into intensity_maps.toml")
    imap.add_argument("--replace", action="store_true", help="with --write: replace a frozen map that differs")
    imap.set_defaults(func=_data_intensity_map)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (``error: argument --x: ...``), like every
    other error of the CLI; sub-commands inherit it (argparse builds them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


#: OS errors of a write that ran out of room: said in words, with the file (``io.naming`` supplies it)
OUT_OF_ROOM = {errno.ENOSPC: "no space left on device while writing it",
               errno.EFBIG: "file too large while writing it (a file-size limit: ulimit -f, or the file system's)",
               errno.EDQUOT: "disk quota exceeded while writing it"}


def error_line(exc: BaseException) -> str:
    """The one line an expected failure prints: the message, with the file an OS error is about."""
    if isinstance(exc, OSError) and exc.errno in OUT_OF_ROOM:
        return f"{exc.filename or 'a file (name unknown)'}: {OUT_OF_ROOM[exc.errno]}"
    if isinstance(exc, OSError) and exc.strerror:  # raised by the OS: name the file it is about
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m benchmark",
        description="Benchmark generators of synthetic annotated cell videos: fit on one real CTC video, "
        "generate, train StarDist + a tracker on the synthetic data, score SEG/DET/TRA on a real held-out "
        "video and FID/FVD/KID/KVD; everything logged to MLflow.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of the one-line message")
    _add_verbosity_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    for module_name, function in COMMAND_HOOKS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the harness is not installed in this checkout
            raise
        getattr(module, function)(sub)
    return parser


def _add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """``-v``/``-q`` before the subcommand set how much progress goes to stderr; a command's result on
    stdout is the same either way. (``generate --quiet``, after the subcommand, only hides progress bars.)"""
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                          help="also debug messages, each with its level and logger; third-party INFO too")
    loudness.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                          help="only warnings and errors on stderr (no stage progress)")
    parser.set_defaults(log_level=logging.INFO)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's kill, ``timeout``) unwinds like Ctrl-C: open MLflow runs are marked KILLED,
    temporary outputs removed; finished stages stay, so the same command resumes."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


#: what an interrupted command leaves behind, said in its ``interrupted`` line
KEPT_ON_INTERRUPT = {
    "run": "finished stages are kept and the same command resumes",
    "oracle": "finished stages are kept and the same command resumes",
    "sweep": "finished tasks are kept and the same command resumes",
    "campaign": "exported bundles and fit checkpoints (<results>/_resume) are kept; the same command resumes",
    "generate": "nothing was written to --out (an earlier output is as it was); a finished fit stays cached",
}


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> tuple[str, int]:
    """The line and exit status of an interrupted command: it names the command and what it kept; the status is
    the shell's convention, 128 + the signal (SIGTERM 143, Ctrl-C 130), so a scheduler can tell them apart."""
    name = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "SIGINT"
    signum = getattr(signal.Signals, name, signal.SIGINT)
    command = _command_name(args)
    kept = KEPT_ON_INTERRUPT.get(str(getattr(args, "command", None)), "nothing half-written is left under a final name")
    how = "Ctrl-C" if signum == signal.SIGINT else name
    return f"error: {command} interrupted by {how}; {kept}", 128 + int(signum)


EX_TEMPFAIL = 75  # sysexits.h: try again later; what a command stopped at its deadline exits with


def _command_name(args: argparse.Namespace) -> str:
    parts = (getattr(args, "command", None), getattr(args, "data_command", None))
    return " ".join(str(part) for part in parts if part) or "the command"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_logging(args.log_level):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; an expected failure is one ``error:`` line on stderr (printed, not logged: its
    form is fixed whatever -v/-q say); Ctrl-C exits 130, SIGTERM 143, a fit stopped at its deadline 75, each
    with a line naming the command."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        with using_cache(getattr(args, "cache", None)):  # --cache DIR, on every command that has it
            return int(args.func(args) or 0)
    except (CTCFormatError, DatasetNotFound, ValueError, OSError) as exc:
        # what a user can fix (bad input, argument, path) is one line; any other exception is a bug and
        # keeps its traceback; --debug shows the traceback of these too
        if args.debug:
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    except BudgetExhausted as exc:  # SYNTHVID_DEADLINE passed mid-fit (benchmark.budget): checkpointed, not failed
        if args.debug:
            raise
        print(f"error: {_command_name(args)} stopped at its deadline: {exc}; the same command resumes from the "
              "checkpoint", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt as exc:
        line, code = _interrupted(args, exc)
        print(line, file=sys.stderr)
        return code
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
