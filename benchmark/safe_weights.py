"""Weights and states on disk without pickle: safetensors for tensors, JSON for the rest, sha256 records.

Unpickling a file runs whatever code it names, so a model read from a user path, a cache folder or a
shipped archive must never be unpickled. Torch tensors go to ``.safetensors`` (a JSON header plus raw
bytes); a nested state such as an optimiser's or an EMA's ``state_dict`` is split into its tensors and a
JSON skeleton kept in the file's own safetensors metadata (``flatten_state`` / ``unflatten_state``).

Every file written here is recorded in a ``SHA256SUMS`` file (``sha256sum`` format) in its folder, and
checked against it before it is read (``benchmark.checksums``): a flipped byte or a swapped file fails with
one line naming it, before any of its content is trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from benchmark.checksums import record_sha256, verify_recorded
from benchmark.io import atomic_write

STATE_KEY = "state"  # safetensors metadata entry holding the JSON skeleton of a flattened state


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None,
                 root: str | Path | None = None) -> Path:
    """Write ``tensors`` to a safetensors file atomically and record its sha256 in ``root`` (its folder)."""
    path = Path(path)
    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=dict(metadata or {})))
    record_sha256([path], root if root is not None else path.parent)
    return path


def load_tensors(path: str | Path, root: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on CPU, after its sha256 checks out against its record."""
    return load_tensors_and_metadata(path, root)[0]


def load_tensors_and_metadata(path: str | Path, root: str | Path | None = None
                              ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on CPU) and metadata of a safetensors file, after its sha256 checks out."""
    verify_recorded(path, root)
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return tensors, metadata


def read_metadata(path: str | Path, root: str | Path | None = None) -> dict[str, str]:
    """A safetensors file's metadata (header only: no tensor is read), after its sha256 checks out."""
    verify_recorded(path, root)
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


# ----------------------------------------------------------------------------- nested states, without pickle
def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` (dicts, lists, tuples, tensors, JSON scalars) -> its tensors and a JSON skeleton naming them.

    Dict keys keep their type (an optimiser's ``state`` is keyed by int), tuples stay tuples, so
    ``unflatten_state`` gives back an equal structure; anything else (an arbitrary object) is refused,
    because it could only be stored by pickling it.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = str(len(tensors))
            tensors[name] = value
            return {"t": name}
        if isinstance(value, Mapping):
            if not all(isinstance(k, str | int) and not isinstance(k, bool) for k in value):
                raise TypeError(f"state dict keys must be str or int: {list(value)[:5]}")
            return {"d": [[k, encode(v)] for k, v in value.items()]}
        if isinstance(value, list | tuple):
            return {"l" if isinstance(value, list) else "u": [encode(v) for v in value]}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} without pickling it")

    skeleton = encode(state)
    return tensors, json.dumps(skeleton)


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: str) -> Any:
    """Inverse of ``flatten_state``."""

    def decode(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        (kind, body), = node.items()
        if kind == "t":
            return tensors[body]
        if kind == "d":
            return {k: decode(v) for k, v in body}
        if kind == "l":
            return [decode(v) for v in body]
        if kind == "u":
            return tuple(decode(v) for v in body)
        raise ValueError(f"unknown node {kind!r} in a stored state")

    return decode(json.loads(skeleton))


def save_state(state: Any, path: str | Path, root: str | Path | None = None,
               metadata: Mapping[str, str] | None = None) -> Path:
    """A nested state (see ``flatten_state``) to one safetensors file, its skeleton in the metadata (plus
    ``metadata``: fields a reader wants from the header alone, see ``read_metadata``)."""
    tensors, skeleton = flatten_state(state)
    return save_tensors(tensors, path, {**(metadata or {}), STATE_KEY: skeleton}, root)


def load_state(path: str | Path, root: str | Path | None = None) -> Any:
    """The nested state ``save_state`` wrote, on CPU, after its sha256 checks out."""
    tensors, metadata = load_tensors_and_metadata(path, root)
    if STATE_KEY not in metadata:
        raise ValueError(f"{path}: safetensors file without a stored state skeleton")
    return unflatten_state(tensors, metadata[STATE_KEY])
