"""The one registry of shipped artefacts: fitted generators (``fits/``) and result bundles (``results/``).

Like stardist's or torchvision's registered weights, every entry is a name, a sha256 and a card. A fit is
``fits/<dataset>/<generator>-<profile>-<fit key>.safetensors`` beside its JSON card; the card's
``location`` is that file's path in the repository, or an ``https://`` URL of a future release. Either
way the file is used only after its sha256 matches the card (``fetch_verified``). A bundle is a folder
under ``results/`` with a ``SHA256SUMS`` that ``verify`` checks file by file (``benchmark.checksums``); this
registry is the one way bundles are found (``import`` and ``report --results`` list them here).

A fit file packs the model FOLDER that ``Generator.save`` wrote, whatever its files: each file's bytes
are a uint8 tensor named by its relative path, and the card's fields are the safetensors metadata too.
Unpacking is byte copying (no pickle), so the format does not depend on any generator's weight layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from benchmark.checksums import SUMS, check_sha256, parse_sums, verify_folder
from benchmark.io import atomic_write, sha256_file
from benchmark.paths import cache_dir

logger = logging.getLogger(__name__)

KINDS = ("fit", "bundle")
MAX_FIT_BYTES = 10_000_000  # the budget: a shipped fit is at most 10 MB
DOWNLOAD_TIMEOUT_S = 30.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ShippedEntry:
    """One shipped artefact: ``location`` is a path relative to the registry root or an https:// URL."""

    kind: str
    name: str
    location: str
    sha256: str
    card: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_url(self) -> bool:
        return "://" in self.location


def registry_root() -> Path:
    """``$SYNTHVID_SHIPPED_ROOT`` (another checkout or a test's folder), else this repository's root."""
    return Path(os.environ.get("SYNTHVID_SHIPPED_ROOT") or Path(__file__).resolve().parent.parent)


# ------------------------------------------------------------------------------------------ discovery
def entries(kind: str, folder: str | Path | None = None) -> list[ShippedEntry]:
    """Every shipped artefact of ``kind`` under ``folder`` (default: the registry root's ``fits/`` or
    ``results/``, which may be absent): ``**/*.json`` fit cards, or bundles (``**/SHA256SUMS``; hidden
    folders, an export in progress, and ``_``-folders, the campaign's signed fit checkpoints in ``_resume/``,
    skipped). Names are relative to ``folder``; ``import`` and ``report
    --results`` pass the user's results folder, which must exist."""
    if kind not in KINDS:
        raise ValueError(f"shipped artefact kind {kind!r}: choose one of {', '.join(KINDS)}")
    root = registry_root()
    if folder is None:
        folder = root / ("fits" if kind == "fit" else "results")
    elif not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such {'fits' if kind == 'fit' else 'results'} folder")
    folder = Path(folder).absolute()
    if kind == "fit":
        return [_fit_entry(card, folder) for card in sorted(folder.glob("**/*.json"))]
    found = sorted(p for p in folder.glob(f"**/{SUMS}")  # not hidden ones nor ``_resume`` (signed checkpoints)
                   if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parent.parts))
    return [_bundle_entry(sums, folder, root) for sums in found]


def find(kind: str, name: str) -> ShippedEntry:
    """The entry ``name`` of ``kind`` (a fit's name: ``<dataset>/<generator>-<profile>-<fit key>``)."""
    for entry in entries(kind):
        if entry.name == name:
            return entry
    raise ValueError(f"{name}: no shipped {kind} of that name under {registry_root()}")


def _fit_entry(card_path: Path, folder: Path) -> ShippedEntry:
    try:
        card = json.loads(card_path.read_text())
        return ShippedEntry("fit", card_path.relative_to(folder).with_suffix("").as_posix(),
                            str(card["location"]), str(card["sha256"]), card)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{card_path}: not a shipped-fit card ({type(exc).__name__}: {exc})") from None


def _bundle_entry(sums: Path, folder: Path, root: Path) -> ShippedEntry:
    """A bundle's entry: its folder relative to ``folder`` as name, its ``SHA256SUMS`` as location (relative
    to the registry root when under it), that file's sha256 (the bundle's identity) and its records as card."""
    data = sums.read_bytes()
    location = sums.relative_to(root).as_posix() if sums.is_relative_to(root) else str(sums)
    return ShippedEntry("bundle", sums.parent.relative_to(folder).as_posix(), location,
                        hashlib.sha256(data).hexdigest(), {"files": parse_sums(sums, data)})


def bundle_folder(entry: ShippedEntry) -> Path:
    """The folder of a bundle entry."""
    return (registry_root() / entry.location).parent


# --------------------------------------------------------------------------------------- verification
def verify(entry: ShippedEntry) -> Path:
    """Check ``entry`` where it lies (a fit: its file; a bundle: every file against its SHA256SUMS, which
    must still be the one the entry was listed with). Returns the file or the bundle's folder."""
    if entry.kind == "bundle":
        folder = bundle_folder(entry)
        if verify_folder(folder) != entry.sha256:
            raise ValueError(f"{folder / SUMS}: changed since the bundle was listed; list it again")
        return folder
    return fetch_verified(entry)


def fetch_verified(entry: ShippedEntry, dest: Path | None = None) -> Path:
    """The entry's file, its sha256 checked: a repository path in place, a URL downloaded (with a progress
    bar) into ``dest`` (default: the cache's ``shipped/`` folder), where a verified earlier download is
    reused. A mismatch is a one-line ValueError naming the file."""
    if not entry.is_url:
        path = registry_root() / _safe_name(entry.location)
        _check_sha(path, entry.sha256, entry.location)
        return path
    target = (dest or cache_dir() / "shipped") / f"{entry.sha256[:16]}-{_url_basename(entry.location)}"
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    _download(entry.location, target, entry.sha256)
    return target


def _check_sha(path: Path, expected: str, label: str) -> None:
    if not path.is_file():
        raise ValueError(f"{label}: shipped file is missing")
    check_sha256(path, expected, label, "changed or damaged; pass --refit to fit instead")


def _url_basename(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "https" and not (parsed.scheme == "http" and parsed.hostname in LOOPBACK):
        raise ValueError(f"{url}: a shipped artefact's URL must be https:// (http only on this machine)")
    return _safe_name(PurePosixPath(parsed.path).name or "download")


def _download(url: str, target: Path, expected: str) -> None:
    from tqdm.auto import tqdm

    def write(tmp: Path) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if digest.hexdigest() != expected:
            raise ValueError(f"{url}: sha256 {digest.hexdigest()[:16]}... does not match its card's "
                             f"{expected[:16]}...")

    try:
        atomic_write(target, write)
    except ValueError:
        raise
    except Exception as exc:  # network errors come in many types
        raise OSError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------ folder packing
def _safe_name(name: str) -> str:
    """``name`` if it is a relative path that stays inside its folder; an absolute one or one with ``..``
    (an archive trying to write elsewhere) is refused."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ".." in parts \
            or "\\" in name or ":" in name:
        raise ValueError(f"{name}: refused, not a relative path inside the shipped folder")
    return name


def pack_folder(folder: Path, target: Path, metadata: dict[str, Any]) -> Path:
    """Write every file of ``folder`` into ONE safetensors file at ``target`` (uint8 tensor per relative
    path; ``metadata`` as JSON strings), atomically. Returns ``target``."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {p.relative_to(folder).as_posix(): np.frombuffer(p.read_bytes(), dtype=np.uint8)
               for p in sorted(folder.rglob("*")) if p.is_file()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # a file for the repository: readable by all, as git checks it out

    return atomic_write(target, write)


def unpack_folder(archive: Path, folder: Path) -> list[str]:
    """Write the files packed in ``archive`` under ``folder`` (which must exist); every name is checked
    first, so a refused name writes nothing. Returns the names."""
    from safetensors import safe_open

    with safe_open(str(archive), framework="numpy") as packed:
        names = [_safe_name(name) for name in packed.keys()]  # noqa: SIM118 - safe_open has no __iter__
        for name in names:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(packed.get_tensor(name).tobytes())
    return names


def archive_metadata(archive: Path) -> dict[str, str]:
    """The metadata strings packed with ``archive`` (a fit's card fields)."""
    from safetensors import safe_open

    with safe_open(str(archive), framework="numpy") as packed:
        return dict(packed.metadata() or {})

