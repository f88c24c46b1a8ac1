"""Atomic writes: a file or folder appears under its final name complete, or not at all.

Every writer stages its output beside the target (same folder, so the final ``os.replace`` is a rename on
one file system) under a hidden temporary name, and removes the staged output when writing fails. A
killed process can leave a hidden ``.<name>.*`` leftover, never a half-written file under the real name.
This is the one implementation; the CTC writers, stage folders, model folders, checkpoints, feature
files and reports all go through it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _new_temporary_file(path: Path) -> Path:
    """A new empty file beside ``path``, named ``.<name>.<random>.tmp<suffix>``.

    The target's suffix is kept so that writers that pick a format from the name (``plt.imsave``) write
    the same format; it is created with the ordinary permissions of ``open`` (0o666 less the umask).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` with a temporary path in ``path``'s folder, then rename it to ``path``.

    For writers that want a path (``torch.save``, ``tifffile.imwrite``, ``joblib.dump``); ``tmp`` exists
    (empty) when ``write`` is called. On any failure the temporary file is removed and ``path`` is left
    as it was. Creates the parent folder. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary_file(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def replace_directory(staged: Path, target: Path) -> None:
    """Move the finished folder ``staged`` to ``target``, replacing an existing ``target``.

    The old ``target`` is first renamed aside (``.<name>.old``) and deleted only after ``staged`` is in
    place, so a failure between the two renames never loses both.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


@contextmanager
def staging_directory(beside: str | Path) -> Iterator[Path]:
    """A new hidden folder ``.<name>.*.partial`` in ``beside``'s parent, removed on exit whatever happens.

    For outputs that are moved into place piecewise (``replace_directory`` on sub-folders) or that a
    library insists on creating itself inside a base folder (StarDist's ``basedir/name``).
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".partial", dir=beside.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, on failure it is removed.

    An existing ``target`` is only replaced when ``overwrite`` is true, so finished work is never
    lost to a half-done rewrite.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    with staging_directory(target) as tmp:
        yield tmp
        replace_directory(tmp, target)


@contextmanager
def folder_lock(target: str | Path, on_wait: Callable[[str], None] | None = None,
                lock_file: str | Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a file ``.<name>.lock`` beside it, or ``lock_file`` where the
    folder beside ``target`` is the user's and should hold nothing else) for the ``with`` body.

    Two processes writing the same output folder would race (one's ``.partial`` removed under the other);
    with the lock the second waits for the first, then finds its finished output. ``on_wait`` is called
    once, with a line naming the folder and the holder's pid, when the lock is busy. The lock is the
    kernel's (``flock``): a killed holder releases it. The lock file stays (removing it would race).
    """
    target = Path(target)
    path = Path(lock_file) if lock_file is not None else target.with_name(f".{target.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        yield
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            if on_wait is not None:
                on_wait(f"{target}: busy, another process (pid {holder}) is writing it; waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
