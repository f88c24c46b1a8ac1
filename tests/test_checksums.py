"""``benchmark.checksums`` (SHA256SUMS files), ``benchmark.io.sha256_file``/``process_alive`` and the one bundle
discovery (``benchmark.shipped.entries("bundle")``): fast, on tiny folders the tests make."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import shipped
from benchmark.checksums import (
    SUMS,
    read_sums,
    record_sha256,
    sign_folder,
    sums_digest,
    verify_folder,
    verify_recorded,
)
from benchmark.io import process_alive, sha256_file


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 5000)  # over one read block
    return folder


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    data = (folder / "sub" / "b.bin").read_bytes()
    assert sha256_file(folder / "sub" / "b.bin") == hashlib.sha256(data).hexdigest()


def test_a_signed_folder_verifies_and_names_a_missing_changed_or_unlisted_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    digest = sign_folder(folder)
    assert digest == sums_digest(folder) == verify_folder(folder)
    assert set(read_sums(folder)) == {"a.txt", "sub/b.bin"}
    (folder / "c.txt").write_text("new\n")
    with pytest.raises(ValueError, match=f"^{folder / 'c.txt'}: not listed in "):
        verify_folder(folder)
    (folder / "c.txt").unlink()
    (folder / "a.txt").write_text("alphA\n")
    with pytest.raises(ValueError, match=f"^{folder / 'a.txt'}: sha256 mismatch") as error:
        verify_folder(folder)
    assert "\n" not in str(error.value)
    (folder / "a.txt").unlink()
    with pytest.raises(ValueError, match=f"^{folder / 'a.txt'}: listed in .* but missing"):
        verify_folder(folder)


@pytest.mark.parametrize("line", ["nothex  a.txt", f"{'0' * 64}  ../escape.txt", f"{'0' * 64}  /etc/passwd",
                                  f"{'0' * 64}a.txt"])
def test_a_malformed_sums_line_is_refused_naming_file_and_line(tmp_path: Path, line: str) -> None:
    folder = _folder(tmp_path)
    sign_folder(folder)
    (folder / SUMS).write_text((folder / SUMS).read_text() + line + "\n")
    with pytest.raises(ValueError, match=f"^{folder / SUMS}: line 3 is not "):
        read_sums(folder)


def test_recorded_files_are_checked_one_by_one(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    record_sha256([folder / "a.txt"], folder)
    record_sha256([folder / "sub" / "b.bin"], folder)  # adds to the record, keeps a.txt's
    verify_recorded(folder / "a.txt")
    verify_recorded(folder / "sub" / "b.bin", folder)
    (folder / "new.txt").write_text("x")
    with pytest.raises(ValueError, match="no sha256 recorded"):
        verify_recorded(folder / "new.txt")


def test_bundles_are_found_once_hidden_exports_skipped(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for name in ("ds/p/gen/0", "ds/p/gen/1", ".ds.partial/p/gen/0"):
        (results / name).mkdir(parents=True)
        (results / name / "run.json").write_text(name)
        sign_folder(results / name)
    found = shipped.entries("bundle", results)
    assert [e.name for e in found] == ["ds/p/gen/0", "ds/p/gen/1"]
    assert [shipped.verify(e) for e in found] == [results / "ds/p/gen/0", results / "ds/p/gen/1"]
    assert found[0].sha256 == sums_digest(results / "ds/p/gen/0")
    with pytest.raises(ValueError, match="no such results folder"):
        shipped.entries("bundle", tmp_path / "absent")


def test_process_alive_tells_a_dead_process_from_a_live_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive(os.getpid()) and not process_alive(child.pid)


def test_a_nested_bundle_is_its_own_unit_and_survives_a_re_export(tmp_path: Path) -> None:
    """``results/<...>/<seed>/<tracker>/`` lies inside the seed's bundle: exporting the inner one must not break
    the outer one's check, and re-exporting the outer one (``overwrite``) must not delete the inner one."""
    from benchmark.bundles import BUNDLE_FORMAT, read_bundle, write_bundle

    seed = tmp_path / "results" / "GOWT1" / "ci" / "bvdm" / "0"
    write_bundle(seed, {"bundle_format": BUNDLE_FORMAT, "tracker": "learned"}, {})
    inner = write_bundle(seed / "trackastra", {"bundle_format": BUNDLE_FORMAT, "tracker": "trackastra"}, {})
    assert read_bundle(seed).record["tracker"] == "learned"  # not "unlisted file trackastra/run.json"
    outer = write_bundle(seed, {"bundle_format": BUNDLE_FORMAT, "tracker": "learned", "v": 2}, {}, overwrite=True)
    assert outer.record["v"] == 2
    assert read_bundle(seed / "trackastra").digest == inner.digest
    (seed / "trackastra" / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="trackastra/run.json: sha256 mismatch"):
        read_bundle(seed / "trackastra")
    read_bundle(seed)  # the outer bundle does not vouch for the inner one's files
    assert sorted(e.name for e in shipped.entries("bundle", tmp_path / "results")) == \
        ["GOWT1/ci/bvdm/0", "GOWT1/ci/bvdm/0/trackastra"]
