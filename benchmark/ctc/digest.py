"""Content digests of CTC sequences: what every stage cache key says about the data it reads.

A key built from a path goes stale the moment a file under that path changes (a truncated raw frame
was trained on from the cache). A full re-hash on every run costs seconds per run on a 92-frame video.
So each file's sha256 is remembered against its ``(size, mtime_ns, inode)``: a re-run only stats the
files, and any write that changes one of the three re-hashes that file. The digest of a sequence is
over the relative names and content hashes of everything a stage reads (raw frames, GT, ST).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from benchmark.ctc.sequence import CTCSequence
from benchmark.io import atomic_write_text, sha256_file
from benchmark.paths import cache_dir

MEMO_FILE = "file-digests.json"
_lock = threading.Lock()
_memo: dict[str, list] | None = None
_memo_path: Path | None = None


def _memo_file() -> Path:
    return cache_dir() / MEMO_FILE


def _load_memo() -> dict[str, list]:
    """The on-disk memo ``{resolved path: [size, mtime_ns, inode, sha256]}`` (re-read when the cache moves)."""
    global _memo, _memo_path
    path = _memo_file()
    if _memo is None or _memo_path != path:
        try:
            loaded = json.loads(path.read_text())
            _memo = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):  # missing or damaged memo: it is only a shortcut
            _memo = {}
        _memo_path = path
    return _memo


def _save_memo(memo: dict[str, list]) -> None:
    """Write the memo atomically, without entries of files that are gone (stage folders come and go)."""
    for key in [k for k in memo if not os.path.exists(k)]:
        del memo[key]
    try:
        atomic_write_text(_memo_file(), json.dumps(memo, separators=(",", ":")))
    except OSError:  # a read-only cache only costs re-hashing next time
        pass


def file_digests(paths: Iterable[Path]) -> list[str]:
    """sha256 of each file, from the memo when its size, mtime and inode are unchanged."""
    with _lock:
        memo = _load_memo()
        out, changed = [], False
        for path in paths:
            stat = path.stat()
            key = str(path.resolve())
            stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
            known = memo.get(key)
            if isinstance(known, list) and len(known) == 4 and known[:3] == stamp:
                out.append(known[3])
                continue
            sha = sha256_file(path)
            memo[key] = [*stamp, sha]
            out.append(sha)
            changed = True
        if changed:
            _save_memo(memo)
        return out


def sequence_files(seq: CTCSequence) -> list[Path]:
    """Every file a stage may read of ``seq``: its raw frames and its GT and ST folders."""
    folders = [seq.image_dir, seq.gt_dir, seq.st_dir]
    return sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())


def sequence_digest(seq: CTCSequence) -> str:
    """sha256 over the names (relative to the dataset folder) and contents of ``sequence_files(seq)``.

    Independent of where the dataset lives: the same data under another path gives the same digest.
    """
    files = sequence_files(seq)
    return _combine((p.relative_to(seq.dataset_dir).as_posix() for p in files), file_digests(files))


def _combine(names: Iterable[str], digests: Iterable[str]) -> str:
    total = hashlib.sha256()
    for name, sha in zip(names, digests, strict=True):
        total.update(f"{name}\0{sha}\n".encode())
    return total.hexdigest()


def forget_memo() -> None:
    """Drop the in-process copy of the memo (tests that point ``SYNTHVID_CACHE`` elsewhere)."""
    global _memo, _memo_path
    with _lock:
        _memo, _memo_path = None, None


__all__ = ["file_digests", "forget_memo", "sequence_digest", "sequence_files"]
