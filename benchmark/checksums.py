"""``SHA256SUMS`` files (``sha256sum`` format): the one reader, writer and checker of recorded file hashes.

A folder's ``SHA256SUMS`` lists ``<sha256>  <relative path>`` for the files in it. Saved weights record each
file as it is written (``record_sha256``) and check it before it is read (``verify_recorded``); result
bundles and shipped folders are signed whole (``sign_folder``) and verified whole (``verify_folder``): a
missing, changed or unlisted file is refused with one line naming it, before any of its content is trusted.
Base layer: only the standard library and ``benchmark.io``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from benchmark.io import atomic_write_text, sha256_file

SUMS = "SHA256SUMS"
#: ``<sha256>  <file>`` (text mode) or ``<sha256> *<file>`` (binary mode), as ``sha256sum`` writes them
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


def parse_sums(sums: Path, data: bytes) -> dict[str, str]:
    """``{relative path: sha256}`` of the ``SHA256SUMS`` bytes ``data`` read from ``sums``; a malformed line,
    or a name that leaves the folder (absolute, ``..``), is refused with one line naming the file and line."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{sums}: not a text file of '<sha256>  <file>' lines") from None
    records: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        name = PurePosixPath(match[2]) if match else None
        if name is None or name.is_absolute() or ".." in name.parts:
            raise ValueError(f"{sums}: line {number} is not '<sha256>  <file>'")
        records[match[2]] = match[1]
    return records


def read_sums(folder: str | Path) -> dict[str, str]:
    """The records of ``folder/SHA256SUMS`` (empty when there is none: nothing recorded yet)."""
    sums = Path(folder) / SUMS
    return parse_sums(sums, sums.read_bytes()) if sums.is_file() else {}


def sums_digest(folder: str | Path) -> str:
    """sha256 of ``folder/SHA256SUMS``: the identity of a signed folder (a result bundle)."""
    return sha256_file(Path(folder) / SUMS)


def check_sha256(path: str | Path, expected: str, label: str | None = None,
                 remedy: str = "the file was changed or corrupted") -> None:
    """Refuse ``path`` unless its sha256 is ``expected``, with one line naming the file (as ``label``, where
    the user knows it by another name, such as a card's location) and saying what to do (``remedy``)."""
    got = sha256_file(path)
    if got != expected:
        raise ValueError(f"{label or path}: sha256 mismatch (expected {expected}, got {got}): {remedy}")


def _format(records: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(records.items()))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{path}: not under {root}, where its sha256 would be recorded") from None


def record_sha256(paths: Iterable[str | Path], root: str | Path) -> Path:
    """Record the sha256 of ``paths`` in ``root/SHA256SUMS`` (atomically; records of vanished files dropped)."""
    root = Path(root)
    records = {name: digest for name, digest in read_sums(root).items() if (root / name).is_file()}
    for path in paths:
        records[_relative(Path(path), root)] = sha256_file(path)
    return atomic_write_text(root / SUMS, _format(records))


def verify_recorded(path: str | Path, root: str | Path | None = None) -> None:
    """Refuse ``path`` unless ``root/SHA256SUMS`` (root: its folder by default) records its current sha256."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file is missing")
    expected = read_sums(root).get(_relative(path, root))
    if expected is None:
        raise ValueError(f"{path}: no sha256 recorded in {root / SUMS}; refusing an unverified file")
    check_sha256(path, expected)


def signed_subfolders(folder: Path) -> list[Path]:
    """Folders below ``folder`` that hold a ``SHA256SUMS`` of their own (a result bundle of another tracker
    or grid point nested in its seed's bundle): each is its own signed unit, outside ``folder``'s record."""
    return sorted(p.parent for p in Path(folder).rglob(SUMS) if p.parent != Path(folder))


def _listed_files(folder: Path) -> list[Path]:
    """The files a folder's ``SHA256SUMS`` covers: all under it but ``SHA256SUMS`` files and signed subfolders."""
    nested = signed_subfolders(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS
                  and not any(p.is_relative_to(n) for n in nested))


def sign_folder(folder: str | Path) -> str:
    """Write ``folder/SHA256SUMS`` (atomically) for every file under ``folder`` as it is now; returns its
    sha256 (``sums_digest``)."""
    folder = Path(folder)
    text = _format({p.relative_to(folder).as_posix(): sha256_file(p) for p in _listed_files(folder)})
    atomic_write_text(folder / SUMS, text)
    return hashlib.sha256(text.encode()).hexdigest()


def verify_folder(folder: str | Path) -> str:
    """Check every file under ``folder`` against its ``SHA256SUMS``: a missing, changed or unlisted file is
    refused with one line naming it. Returns the sha256 of the ``SHA256SUMS`` that was checked."""
    folder = Path(folder)
    sums = folder / SUMS
    data = sums.read_bytes()
    listed = parse_sums(sums, data)
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path}: listed in {sums} but missing")
        check_sha256(path, digest)
    extra = [p for p in _listed_files(folder) if p.relative_to(folder).as_posix() not in listed]
    if extra:
        raise ValueError(f"{extra[0]}: not listed in {sums} (added after the folder was signed)")
    return hashlib.sha256(data).hexdigest()
