"""No pickle on any load path (issue 30, part 4).

Four checks: (1) the source holds no unpickling load call outside the one numpy-only unpickler;
(2) the BVDM DDPM's saved model and its training checkpoints are safetensors that round-trip exactly, and a
resumed fit ends bit for bit where an uninterrupted one does; (3) the tracker's classifiers, fitted on real
GOWT1 features, predict the same after a save/load through skops, and a file carrying a pickle or skops
payload that names a callable is refused without running it; (4) a weights file with one byte flipped is
refused with one line naming it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skops.io
import torch

from benchmark.checksums import SUMS as SUMS_FILE
from benchmark.checksums import record_sha256
from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import full_masks
from benchmark.safe_weights import (
    flatten_state,
    load_state,
    save_state,
    unflatten_state,
)
from downstream.tracker.features import detect, frame_pair
from downstream.tracker.model import (
    MODEL_FILE,
    PARAMS_FILE,
    TrackerConfig,
    fit_classifiers,
    load_tracker,
    save_classifiers,
    sequence_pairs,
)
from generators.bvdm.data import IntensityStats
from generators.bvdm.ddpm import UNET_WEIGHTS, DDPMConfig, TextureDDPM, train_ddpm
from generators.bvdm.flow import WEIGHTS_FILE, MaskFlow
from generators.cellcyclegan.networks import UNetGenerator
from generators.cellcyclegan.train import GENERATOR_FILE, load_generator, save_generator

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "generators", "downstream", "reports", "scripts")
UNPICKLER = ROOT / "benchmark" / "metrics" / "numpy_pickle.py"  # the one allowed: numpy arrays only
torch.set_num_threads(1)  # shared 2-core machine


# ----------------------------------------------------------------------------------- (1) the source, grepped
_CALLS = re.compile(r"\b(torch\.load|joblib\.load|pickle\.loads?|cloudpickle\.loads?|dill\.loads?"
                    r"|np\.load|numpy\.load)\s*\(")
_UNPICKLER = re.compile(r"\b(?:pickle\.)?_?Unpickler\b")  # used or subclassed: an unpickler all the same


def _call_text(source: str, start: int) -> str:
    """The call starting at ``start`` up to its closing parenthesis (arguments may span lines)."""
    depth = 0
    for i in range(source.index("(", start), len(source)):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        if depth == 0:
            return source[start:i + 1]
    return source[start:]


def unpickling_calls(source: str) -> list[str]:
    """Calls in ``source`` that can unpickle: torch.load(weights_only=False), joblib/pickle/cloudpickle/dill
    loads, np.load(allow_pickle=True), and any use of ``pickle.Unpickler`` (called or subclassed)."""
    found = [f"pickle.Unpickler at offset {m.start()}" for m in _UNPICKLER.finditer(source)]
    for match in _CALLS.finditer(source):
        call, name = _call_text(source, match.start()), match.group(1)
        if name == "torch.load":
            bad = re.search(r"weights_only\s*=\s*False", call) is not None
        elif name in ("np.load", "numpy.load"):
            bad = re.search(r"allow_pickle\s*=\s*True", call) is not None
        else:
            bad = True
        if bad:
            found.append(" ".join(call.split()))
    return found


def test_the_scanner_finds_every_kind_of_unpickling_call() -> None:
    """The static check below is only as good as its scanner: it must see each form, across lines too."""
    snippet = ('state = torch.load(path,\n    map_location="cpu", weights_only=False)\nx = joblib.load(p)\n'
               'y = pickle.load(fh)\nz = pickle.Unpickler(fh).load()\nw = np.load(p, allow_pickle=True)\n'
               'ok = torch.load(p, weights_only=True)\nok2 = np.load(p)\nclass U(pickle.Unpickler):\n    pass\n')
    assert len(unpickling_calls(snippet)) == 6
    assert unpickling_calls("safe = torch.load(p, map_location='cpu', weights_only=True)") == []


def test_no_module_unpickles_outside_the_numpy_only_unpickler() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == UNPICKLER:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {call}" for call in unpickling_calls(path.read_text())]
    assert offenders == []
    assert unpickling_calls(UNPICKLER.read_text()), "the exempted file should be the one that unpickles"


def test_the_numpy_only_unpickler_is_defined_once() -> None:
    """``i3d.py`` and the reference-logits script share it: no second definition anywhere."""
    defining = [path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                if re.search(r"^class \w*\(pickle\.Unpickler\)", path.read_text(), re.MULTILINE)]
    assert defining == ["benchmark/metrics/numpy_pickle.py"]


def test_the_numpy_only_unpickler_refuses_a_callable(tmp_path: Path) -> None:
    from benchmark.metrics.numpy_pickle import load_numpy_only_pickle

    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"params": {"w": np.arange(4.0)}}))
    np.testing.assert_array_equal(load_numpy_only_pickle(good)["params"]["w"], np.arange(4.0))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_only_pickle(evil)
    assert not marker.exists()


class _Payload:
    """A classic malicious pickle: unpickling it calls ``os.system`` to create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


# ----------------------------------------------------------------------------------- (2) DDPM, safetensors
def test_nested_states_round_trip_with_their_types(tmp_path: Path) -> None:
    """Int keys (an optimiser's state), tuples (betas), None, bools and 0-d tensors come back as they were."""
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}},
             "param_groups": [{"betas": (0.9, 0.999), "foreach": None, "maximize": False, "params": [0]}],
             "rng": torch.get_rng_state(), "losses": torch.tensor([0.5, 0.25], dtype=torch.float64)}
    tensors, skeleton = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()) and json.loads(skeleton)
    path = save_state(state, tmp_path / "state.safetensors")
    back = load_state(path)
    assert list(back["state"]) == [0] and back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["param_groups"][0]["foreach"] is None and back["param_groups"][0]["maximize"] is False
    for key in ("step", "exp_avg"):
        assert torch.equal(back["state"][0][key], state["state"][0][key])
    assert torch.equal(back["rng"], state["rng"]) and back["rng"].dtype == torch.uint8
    assert back["losses"].tolist() == [0.5, 0.25]
    assert unflatten_state(tensors, skeleton)["param_groups"] == state["param_groups"]
    with pytest.raises(TypeError, match="without pickling"):
        flatten_state({"model": object()})


@pytest.fixture(scope="module")
def crops(gowt1_window: Path) -> tuple[np.ndarray, IntensityStats]:
    """Real GOWT1 nucleus crops (32 px, one frame of 01), normalised to about [-1, 1]."""
    from benchmark.ctc.crops import iter_cell_crops

    seq = CTCSequence(gowt1_window, "01")
    images = np.stack([c.image for c in iter_cell_crops(seq, 32, [0, 1])]).astype(np.float32)
    lo, hi = np.percentile(images, [1, 99])
    return np.clip((images - lo) / (hi - lo) * 2 - 1, -1, 1), IntensityStats(scale=float(hi - lo), fill=float(lo))


DDPM = DDPMConfig(block_out_channels=(8, 16), norm_num_groups=4, batch_size=4, iterations=6, lr=2e-3,
                  checkpoint_every=2, seed=3)


class _Killed(Exception):
    pass


def test_ddpm_resume_from_safetensors_checkpoints_equals_an_uninterrupted_fit(crops, tmp_path: Path) -> None:
    images, stats = crops
    uninterrupted = train_ddpm(images, stats, DDPM)

    def kill_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train_ddpm(images, stats, DDPM, checkpoint_dir=tmp_path / "ck", callback=kill_at_5)
    saved = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert saved == ["SHA256SUMS", "checkpoint-2.safetensors", "checkpoint-4.safetensors"]
    assert not _is_pickle(tmp_path / "ck" / "checkpoint-4.safetensors")
    steps: list[int] = []
    resumed = train_ddpm(images, stats, DDPM, checkpoint_dir=tmp_path / "ck", callback=lambda s, _: steps.append(s))
    assert steps == [5, 6]
    assert resumed.loss == uninterrupted.loss  # bit for bit: the RNG states came back exactly
    for (name, a), b in zip(uninterrupted.unet.state_dict().items(), resumed.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_ddpm_saved_model_is_safetensors_and_reloads_identically(crops, tmp_path: Path) -> None:
    images, stats = crops
    ddpm = train_ddpm(images, stats, DDPMConfig(**{**DDPM.__dict__, "iterations": 2, "checkpoint_every": 0}))
    ddpm.save_pretrained(tmp_path / "ddpm")
    files = sorted(p.relative_to(tmp_path / "ddpm").as_posix() for p in (tmp_path / "ddpm").rglob("*") if p.is_file())
    assert UNET_WEIGHTS in files and SUMS_FILE in files
    assert all(f.endswith((".safetensors", ".json")) or f == SUMS_FILE for f in files), files
    reloaded = TextureDDPM.from_pretrained(tmp_path / "ddpm")
    for (name, a), b in zip(ddpm.unet.state_dict().items(), reloaded.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert reloaded.loss == ddpm.loss


def _is_pickle(path: Path) -> bool:
    """A pickle starts with the PROTO opcode; torch.save's zip holds ``data.pkl``."""
    data = path.read_bytes()
    return data[:1] == b"\x80" or b"data.pkl" in data


# ----------------------------------------------------------------------------------- (3) tracker, skops
@pytest.fixture(scope="module")
def tracker_dir(gowt1_window: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, np.ndarray]:
    """Link and division classifiers fitted on real GOWT1 01 (window), saved; features of held-out 02."""
    config = TrackerConfig(detections="full", max_iter=30)
    pairs = sequence_pairs(CTCSequence(gowt1_window, "01"), config, progress=False)
    link, division, _ = fit_classifiers(pairs, config, gowt1_window)  # this window of 01 has no division: division is None
    out = tmp_path_factory.mktemp("tracker")
    params = {"format": 2, "tau_link": 0.3, "tau_division": 0.5, "config": config.__dict__,
              "pair_features": list(_pair_features()), "division_features": [], "sklearn": "test"}
    save_classifiers({"link": link, "division": division}, params, out)
    test = CTCSequence(gowt1_window, "02")
    masks = [full_masks(test, t) for t in range(6)]
    dets = [detect(m, test.image(t)) for t, m in enumerate(masks)]
    features = [frame_pair(dets[t], dets[t + 1], masks[t], masks[t + 1], config.k_candidates, config.radius).features
                for t in range(5)]
    return out, {"link": link, "division": division}, np.concatenate(features)


def _pair_features() -> tuple[str, ...]:
    from downstream.tracker.features import PAIR_FEATURES

    return PAIR_FEATURES


def test_tracker_model_round_trips_through_skops_with_identical_predictions(tracker_dir) -> None:
    out, fitted, features = tracker_dir
    assert len(features) > 10
    assert not any(_is_pickle(p) for p in out.iterdir() if p.suffix == ".skops")
    loaded = load_tracker(out)
    probs = fitted["link"].predict_proba(features)
    assert probs[:, 1].min() < 0.5 < probs[:, 1].max()  # links and non-links: not a constant prediction
    np.testing.assert_array_equal(loaded["link"].predict_proba(features), probs)
    assert (loaded["division"] is None) == (fitted["division"] is None)
    assert loaded["config"]["link_thresholds"] == TrackerConfig().link_thresholds  # tuples, as fitted
    assert loaded["tau_link"] == 0.3


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("kind", ["pickle", "skops-callable"])
def test_a_malicious_tracker_file_is_refused_without_running_it(tracker_dir, tmp_path: Path, kind: str) -> None:
    """The attacker rewrites the model AND its SHA256SUMS record: the loader itself must refuse the payload."""
    model = _copy_model(tracker_dir[0], tmp_path / "model")
    marker = tmp_path / "pwned"
    if kind == "pickle":
        (model / MODEL_FILE).write_bytes(pickle.dumps({"link": _Payload(marker), "division": None}))
        message = "not a skops tracker model"
    else:
        skops.io.dump({"link": os.system, "division": None}, model / MODEL_FILE)
        message = r"untrusted types.*posix\.system"
    record_sha256([model / MODEL_FILE, model / PARAMS_FILE], model)
    with pytest.raises(ValueError, match=message) as error:
        load_tracker(model)
    assert str(model / MODEL_FILE) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------------- (4) tampered weights
def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # in the tensor bytes: the file still parses, only the hash can tell
    path.write_bytes(bytes(data))


def _flow(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    MaskFlow(32).save_pretrained(tmp_path / "flow")
    return tmp_path / "flow" / WEIGHTS_FILE, lambda: MaskFlow.from_pretrained(tmp_path / "flow")


def _cellcyclegan(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    torch.manual_seed(0)
    path = tmp_path / GENERATOR_FILE
    save_generator(UNetGenerator((8, 16)), path)
    return path, lambda: load_generator(path)


def _checkpoint(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    path = save_state({"w": torch.randn(64), "step": 3}, tmp_path / "checkpoint-3.safetensors")
    return path, lambda: load_state(path)


def _tracker(tmp_path: Path, source: Path) -> tuple[Path, Callable[[], object]]:
    model = _copy_model(source, tmp_path / "model")
    return model / MODEL_FILE, lambda: load_tracker(model)


@pytest.mark.parametrize("writer", ["flow", "cellcyclegan", "checkpoint", "tracker"])
def test_a_flipped_byte_is_refused_with_one_line_naming_the_file(writer: str, tracker_dir, tmp_path: Path) -> None:
    path, load = (_tracker(tmp_path, tracker_dir[0]) if writer == "tracker"
                  else {"flow": _flow, "cellcyclegan": _cellcyclegan, "checkpoint": _checkpoint}[writer](tmp_path))
    load()  # intact: loads
    _flip_last_byte(path)
    with pytest.raises(ValueError) as error:
        load()
    message = str(error.value)
    assert message.startswith(f"{path}: sha256 mismatch (expected ") and "\n" not in message
    assert message.endswith("the file was changed or corrupted")


def test_a_weights_file_without_a_recorded_sha256_is_refused(tmp_path: Path) -> None:
    path, load = _flow(tmp_path)
    (path.parent / SUMS_FILE).unlink()
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: no sha256 recorded"):
        load()


def test_a_ddpm_with_a_tampered_unet_is_refused(crops, tmp_path: Path) -> None:
    images, stats = crops
    ddpm = train_ddpm(images, stats, DDPMConfig(**{**DDPM.__dict__, "iterations": 1, "checkpoint_every": 0}))
    ddpm.save_pretrained(tmp_path / "ddpm")
    _flip_last_byte(tmp_path / "ddpm" / UNET_WEIGHTS)
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors: sha256 mismatch"):
        TextureDDPM.from_pretrained(tmp_path / "ddpm")
