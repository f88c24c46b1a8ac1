"""Atomic writes: a file or folder appears under its final name complete, or not at all.

Every writer stages its output beside the target (same folder, so the final ``os.replace`` is a rename on
one file system) under a hidden temporary name, and removes the staged output when writing fails. A
killed process can leave a hidden ``.<name>.*`` leftover, never a half-written file under the real name.
This is the one implementation; the CTC writers, stage folders, model folders, checkpoints, feature
files and reports all go through it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


#: this host, short: with the pid it names the owner of a temporary name (``<host>-<pid>``)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
#: what follows ``.<name>.`` in a temporary name: owner, random part, ``.partial`` (folder) or ``.tmp*`` (file)
_TEMPORARY = re.compile(r"([0-9a-f]{6})-(\d+)-[A-Za-z0-9_]+\.(?:partial|tmp[^/]*)")


def _owner() -> str:
    """``<host>-<pid>`` of this process: recorded in every temporary name, so that a later writer can tell the
    leftover of a killed process (SIGKILL, a power cut: nothing in it could clean up) from a live one's."""
    return f"{_HOST}-{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (another user's live process counts): a leftover or a
    RUNNING record of a dead one may be cleaned up, a live one's may not."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read now: the one file hash (memos, such as ``benchmark.ctc.digest``'s and
    ``benchmark.assets``', sit on top of it; a tamper check calls it directly to see the bytes as they are)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def remove_dead_leftovers(target: str | Path) -> list[Path]:
    """Remove the hidden ``.<name>.<host>-<pid>-*.partial`` folders and ``.tmp`` files beside ``target`` left
    by a process of THIS host that is gone; a live process's (or another host's, on shared storage) are kept.
    Called after a successful write of ``target``; returns what was removed."""
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    for path in candidates:
        match = _TEMPORARY.fullmatch(path.name[len(prefix):])
        if match is None or match[1] != _HOST or process_alive(int(match[2])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        logger.info("removed %d leftover(s) of a killed writer beside %s: %s", len(removed), target,
                    ", ".join(p.name for p in removed))
    return removed


def _new_temporary_file(path: Path) -> Path:
    """A new empty file beside ``path``, named ``.<name>.<host>-<pid>-<random>.tmp<suffix>``.

    The target's suffix is kept so that writers that pick a format from the name (``plt.imsave``) write
    the same format; it is created with the ordinary permissions of ``open`` (0o666 less the umask).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{_owner()}-{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


#: errors of a write itself (a full disk, a file-size limit, a quota, a failing or read-only device): one of
#: these without a file name is about the file being written
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS})


def naming(exc: OSError, target: Path, staged: Path | None = None) -> OSError:
    """``exc`` as an error about ``target``: an OS error raised while writing (a full disk, ``EFBIG``) often
    carries no file name, or the name of a temporary file or staging folder the user never asked for. The
    same error (class and errno) is returned naming ``target`` (or ``target/<relative>`` for a file inside
    ``staged``); one that already names a file elsewhere, or has no errno, is returned as it is."""
    if exc.errno is None or (exc.filename and not isinstance(exc.filename, str | os.PathLike)):
        return exc  # no errno to keep, or a file named some other way (bytes, a descriptor): left as it is
    name = Path(exc.filename) if exc.filename else None
    if name is not None and staged is not None and name.is_relative_to(staged):
        named = target / name.relative_to(staged)
    elif (name is None and exc.errno in WRITE_ERRNOS) or (name is not None and name.name.startswith(f".{target.name}.")):
        named = target
    else:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(named))


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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        renamed = naming(exc, path)
        if renamed is exc:
            raise
        raise renamed from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_dead_leftovers(path)
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
    """A new hidden folder ``.<name>.<host>-<pid>-*.partial`` in ``beside``'s parent, removed on exit whatever
    happens; on success, the leftovers of killed earlier writers of ``beside`` go too (``remove_dead_leftovers``).

    For outputs that are moved into place piecewise (``replace_directory`` on sub-folders) or that a
    library insists on creating itself inside a base folder (StarDist's ``basedir/name``).
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{_owner()}-", suffix=".partial", dir=beside.parent))
    try:
        yield tmp
    except OSError as exc:  # a full disk while writing: name the file where it was going, not the staging folder
        inside = isinstance(exc.filename, str | os.PathLike) and Path(exc.filename).is_relative_to(tmp)
        renamed = naming(exc, beside.parent, tmp) if inside else naming(exc, beside)
        if renamed is exc:
            raise
        raise renamed from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    remove_dead_leftovers(beside)


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
        try:
            yield tmp
            replace_directory(tmp, target)
        except OSError as exc:  # a full disk while writing: name the file under target, not the staging folder
            renamed = naming(exc, target, tmp)
            if renamed is exc:
                raise
            raise renamed from exc


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
