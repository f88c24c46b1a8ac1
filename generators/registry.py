"""Generators by name: the built-ins plus plug-ins from the ``synthvid.generators`` entry point."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from generators.base import ENTRY_POINT_GROUP, Generator, adopt_generator, registered_generators

#: built-in generators and the module that registers each (imported lazily: torch/TF are heavy)
BUILTIN = {
    "mitogen": "generators.mitogen",
    "bvdm": "generators.bvdm.generator",
    "cellcyclegan": "generators.cellcyclegan.generator",
    "folder": "generators.folder",
    "real": "generators.folder",
}


def available_generators() -> list[str]:
    names = set(BUILTIN) | set(registered_generators())
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_generator(name: str) -> type[Generator]:
    """The generator class registered under ``name``; a clear error lists what exists."""
    if name not in registered_generators():
        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        else:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name:
                    adopt_generator(name, ep.load())
    if name not in registered_generators():
        raise ValueError(f"unknown generator {name!r}; available: {', '.join(available_generators())}")
    return registered_generators()[name]
