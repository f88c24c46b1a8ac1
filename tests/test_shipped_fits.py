"""Shipped fitted generators (``benchmark.shipped``, ``generators.fit_cache``, ``scripts/ship_fit.py``).

A ci-profile fit of ``mitogen`` (seconds) is shipped into a registry made by the test (``SYNTHVID_SHIPPED_ROOT``)
on the real GOWT1 data; ``generate --profile ci`` in a fresh cache must use it without fitting, give the bytes a
fit from scratch gives, refuse it when one byte changed, ignore it with ``--refit``, and take it from a URL
through the same check. The repository's own ``fits/`` must match today's fit keys.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from benchmark import shipped
from benchmark.cli import main
from benchmark.io import sha256_file
from generators.cli import MANIFEST
from generators.fit_cache import fit_key, profile_fit_inputs
from generators.registry import get_generator

DATASET = "Fluo-N2DH-GOWT1"
REPO = Path(__file__).resolve().parents[1]


def _ship_fit_module():
    spec = importlib.util.spec_from_file_location("ship_fit", REPO / "scripts" / "ship_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def registry(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry root holding one shipped fit: mitogen, profile ci, GOWT1 (fitted in its own cache)."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHVID_SHIPPED_ROOT", str(root))
        mp.setenv("SYNTHVID_CACHE", str(tmp_path_factory.mktemp("shipping-cache")))
        _ship_fit_module().ship_fit("mitogen", DATASET, "ci", root / "fits", data_root=str(shared_assets))
    return root


def _card(root: Path) -> Path:
    (card,) = (root / "fits" / DATASET).glob("mitogen-ci-*.json")
    return card


def _generate(shared_assets: Path, cache: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--generator", "mitogen", "--dataset", DATASET, "--data-root", str(shared_assets),
                 "--profile", "ci", "--frames", "3", "--sequences", "1", "--seed", "7", "--quiet",
                 "--cache", str(cache), "--out", str(out), *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


@pytest.fixture
def fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of mitogen's ``fit`` (which still runs)."""
    cls = get_generator("mitogen")
    calls: list[int] = []
    original = cls.fit

    def counted(self, real):
        calls.append(1)
        return original(self, real)

    monkeypatch.setattr(cls, "fit", counted)
    return calls


def test_generate_profile_uses_the_shipped_fit_and_matches_a_fresh_fit(
        registry: Path, shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, fit_calls: list[int]) -> None:
    monkeypatch.setenv("SYNTHVID_SHIPPED_ROOT", str(registry))
    card = json.loads(_card(registry).read_text())
    with caplog.at_level(logging.INFO, logger="generators.fit_cache"):
        assert _generate(shared_assets, tmp_path / "cache", tmp_path / "shipped") == 0
    assert fit_calls == []  # never fitted
    assert f"fit of mitogen: shipped {card['location']} (sha256 ok)" in caplog.messages
    assert (tmp_path / "cache" / "generators" / f"mitogen-{card['fit_key']}" / "fit_record.json").is_file()

    # --refit ignores the shipped fit: it fits, in a fresh cache too, and gives the same bytes
    assert _generate(shared_assets, tmp_path / "cache2", tmp_path / "fresh", "--refit") == 0
    assert fit_calls == [1]
    shipped_files, fresh_files = _files(tmp_path / "shipped"), _files(tmp_path / "fresh")
    assert shipped_files and shipped_files == fresh_files


def test_generate_profile_reaches_the_runs_fit_key(shared_assets: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate --profile ci`` fits on the run's window with the run's params: the key of ``run``'s fit."""
    from benchmark.config import build_run_config
    from benchmark.ctc import CTCSequence, window_sequence

    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    params, seq = profile_fit_inputs("ci", DATASET, "mitogen", {"imaging_frames": 3}, str(shared_assets))
    config = build_run_config("ci", DATASET, "mitogen", generator_overrides={"imaging_frames": 3})
    frames, box = config.window_cut()
    window_sequence(CTCSequence(shared_assets / DATASET, "01"), tmp_path / "run" / DATASET, frames=frames, box=box)
    cls = get_generator("mitogen")
    assert params == config.generator_params and params["imaging_frames"] == 3
    assert fit_key(cls, params, seq) == fit_key(cls, config.generator_params, CTCSequence(tmp_path / "run" / DATASET, "01"))


def test_a_tampered_shipped_fit_is_refused_in_one_line(registry: Path, shared_assets: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    archive = _card(copy).with_suffix(".safetensors")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    monkeypatch.setenv("SYNTHVID_SHIPPED_ROOT", str(copy))
    assert _generate(shared_assets, tmp_path / "cache", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: fits/{DATASET}/{archive.name}: sha256 ")
    assert not any((tmp_path / "cache" / "generators").glob("mitogen-*"))  # nothing unpacked


@pytest.mark.parametrize("name", ["../evil.json", "/tmp/evil.json", "a/../../evil.json"])
def test_an_archive_entry_outside_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.safetensors"
    save_file({"config.json": np.frombuffer(b"{}", np.uint8), name: np.frombuffer(b"x", np.uint8)}, str(archive))
    (tmp_path / "into").mkdir()
    with pytest.raises(ValueError, match="refused, not a relative path"):
        shipped.unpack_folder(archive, tmp_path / "into")
    assert list((tmp_path / "into").iterdir()) == [] and not (tmp_path / "evil.json").exists()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (a release's download URL, without the network)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_entry_goes_through_the_same_check(registry: Path, shared_assets: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, http_root: tuple[Path, str],
                                                 caplog: pytest.LogCaptureFixture, fit_calls: list[int]) -> None:
    served, url = http_root
    source = _card(registry)
    shutil.copy(source.with_suffix(".safetensors"), served / "fit.safetensors")
    card = {**json.loads(source.read_text()), "location": f"{url}/fit.safetensors"}
    root = tmp_path / "registry"
    (root / "fits" / DATASET).mkdir(parents=True)
    (root / "fits" / DATASET / source.name).write_text(json.dumps(card))
    monkeypatch.setenv("SYNTHVID_SHIPPED_ROOT", str(root))
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    (entry,) = shipped.entries("fit")
    assert entry.is_url and shipped.find("fit", entry.name) == entry

    with caplog.at_level(logging.INFO, logger="generators.fit_cache"):
        assert _generate(shared_assets, tmp_path / "cache", tmp_path / "out") == 0
    assert fit_calls == [] and f"fit of mitogen: shipped {card['location']} (sha256 ok)" in caplog.messages

    data = bytearray((served / "fit.safetensors").read_bytes())
    data[100] ^= 0x01
    (served / "fit.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"fit\.safetensors: sha256 .* does not match"):
        shipped.fetch_verified(entry, tmp_path / "downloads")
    assert not any((tmp_path / "downloads").glob("*.safetensors"))  # nothing unverified is left


def test_ship_fit_is_idempotent_replaces_stale_cards_and_keeps_the_budget(
        registry: Path, shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "registry"
    shutil.copytree(registry, root)
    monkeypatch.setenv("SYNTHVID_SHIPPED_ROOT", str(root))
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    card_path = _card(root)
    before = card_path.read_bytes()
    stale = card_path.with_name("mitogen-ci-0000000000000000.json")
    stale.write_text(json.dumps({**json.loads(before), "fit_key": "0000000000000000"}))
    stale.with_suffix(".safetensors").write_bytes(b"old")
    other_profile = card_path.with_name("mitogen-cpu-1111111111111111.json")
    other_profile.write_text(json.dumps({**json.loads(before), "profile": "cpu", "fit_key": "1111111111111111"}))
    module = _ship_fit_module()
    assert module.ship_fit("mitogen", DATASET, "ci", root / "fits", data_root=str(shared_assets)) == card_path
    assert card_path.read_bytes() == before  # already shipped: left as it is
    assert not stale.exists() and not stale.with_suffix(".safetensors").exists()  # stale: same generator/profile
    assert other_profile.exists()  # another profile's card is not this one's to remove

    card_path.with_suffix(".safetensors").unlink()  # ships again (from the cache the shipped fit filled)
    monkeypatch.setattr(module, "MAX_FIT_BYTES", 1000)
    with pytest.raises(ValueError, match="MB, over the 0 MB budget"):
        module.ship_fit("mitogen", DATASET, "ci", root / "fits", data_root=str(shared_assets))
    assert not card_path.with_suffix(".safetensors").exists()
    monkeypatch.setattr(module, "MAX_FIT_BYTES", shipped.MAX_FIT_BYTES)
    module.ship_fit("mitogen", DATASET, "ci", root / "fits", data_root=str(shared_assets))
    card = json.loads(card_path.read_text())
    assert card["sha256"] == sha256_file(card_path.with_suffix(".safetensors"))
    packed = shipped.archive_metadata(card_path.with_suffix(".safetensors"))
    assert packed["fit_key"] == card["fit_key"] and json.loads(packed["wall_s"]) == card["wall_s"]


def test_bundles_are_discovered_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "results" / "ci-2026" / "bvdm"
    bundle.mkdir(parents=True)
    (bundle / "table.csv").write_text("a,b\n1,2\n")
    (bundle / "SHA256SUMS").write_text(f"{sha256_file(bundle / 'table.csv')}  table.csv\n")
    monkeypatch.setenv("SYNTHVID_SHIPPED_ROOT", str(tmp_path))
    (entry,) = shipped.entries("bundle")
    assert entry.name == "ci-2026/bvdm" and shipped.verify(entry) == bundle
    (bundle / "table.csv").write_text("a,b\n1,3\n")
    with pytest.raises(ValueError, match="table.csv: sha256"):
        shipped.verify(entry)


def test_the_repositorys_shipped_fits_match_todays_fit_keys(shared_assets: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every card under ``fits/`` is the fit today's code would make (else a fresh clone fits again): a
    code or version change that moves a key must re-ship with ``scripts/ship_fit.py``."""
    monkeypatch.delenv("SYNTHVID_SHIPPED_ROOT", raising=False)
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    fits = shipped.entries("fit")
    assert {(e.card["generator"], e.card["profile"]) for e in fits} >= {("bvdm", "ci"), ("cellcyclegan", "ci"), ("bvdm", "cpu"), ("cellcyclegan", "cpu")}
    for entry in fits:
        card = entry.card
        params, seq = profile_fit_inputs(card["profile"], card["dataset"], card["generator"], None, str(shared_assets))
        today = fit_key(get_generator(card["generator"]), params, seq)
        assert card["fit_key"] == today, (
            f"{entry.location} is stale (fit key {card['fit_key']}, today {today}): run scripts/ship_fit.py "
            f"--generator {card['generator']} --dataset {card['dataset']} --profile {card['profile']}")
        assert card["size_bytes"] <= shipped.MAX_FIT_BYTES and shipped.fetch_verified(entry).is_file()
