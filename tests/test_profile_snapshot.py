"""Profiles share bases without changing what they resolve to.

Stage cache keys and every CI threshold hang on the resolved ``RunConfig`` of each (profile, dataset,
generator), so moving a value between a profile and its base must leave all of them as they were.
``tests/fixtures/resolved_profiles.json`` holds them; the snapshot test compares against it. The snapshot
is updated deliberately, in the same commit, only when a profile value is changed on purpose (which
invalidates that profile's caches and may move its CI numbers):

    .venv/bin/python -m tests.test_profile_snapshot

and the diff of the JSON file (one line per entry) is the review of what changed.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from benchmark.config import BASES, PROFILE_DIR, PROFILES, build_run_config, load_profile
from benchmark.datasets import DATASETS
from generators.registry import BUILTIN

SNAPSHOT = Path(__file__).parent / "fixtures" / "resolved_profiles.json"
log = logging.getLogger(__name__)


def resolved_profiles() -> dict[str, Any]:
    """Every shipped profile merged (``merged/<profile>``) and resolved for every dataset and built-in
    generator (``<profile>/<dataset>/<generator>``)."""
    out: dict[str, Any] = {}
    for profile in PROFILES:
        out[f"merged/{profile}"] = load_profile(profile)
        for dataset in sorted(DATASETS):
            for generator in sorted(BUILTIN):
                out[f"{profile}/{dataset}/{generator}"] = build_run_config(profile, dataset, generator).to_dict()
    return out


def render(entries: dict[str, Any]) -> str:
    """One sorted-key JSON line per entry, so a snapshot diff names each config that moved."""
    lines = [f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}" for key, value in sorted(entries.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def test_resolved_profiles_match_the_snapshot() -> None:
    expected = json.loads(SNAPSHOT.read_text())
    actual = json.loads(render(resolved_profiles()))  # through JSON: tuples and lists compare alike
    moved = sorted(key for key in expected.keys() | actual.keys() if expected.get(key) != actual.get(key))
    assert not moved, f"resolved profiles differ from {SNAPSHOT.name} (see its test's docstring): {moved}"


def _leaves(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every value a TOML file sets; an empty table counts as one (it adds a section)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, (*prefix, key)))
        else:
            out.append(((*prefix, key), value))
    return out


def _lookup(table: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(table, dict) or key not in table:
            return KeyError
        table = table[key]
    return table


def _own(name: str) -> dict[str, Any]:
    """What a shipped profile's file itself sets, before any merge."""
    with open(PROFILE_DIR / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


EXTENDING = [name for name in (*PROFILES, *BASES) if "extends" in _own(name)]


@pytest.mark.parametrize("name", EXTENDING)
def test_a_profile_states_only_what_it_changes_from_its_base(name: str) -> None:
    """A value equal to the base's is a restatement: it hides what the profile changes and drifts when
    the base moves."""
    own = _own(name)
    base = own.pop("extends")
    inherited = load_profile(PROFILE_DIR / f"{base}.toml")  # by path: a base is refused by name
    restated = [".".join(path) for path, value in _leaves(own) if _lookup(inherited, path) == value]
    assert not restated, f"{name} restates its base {base!r}: {restated}"


def test_every_profile_file_is_offered_or_a_base() -> None:
    """A new file in the profile folder is either a run users may choose or a base they may not."""
    files = {path.stem for path in PROFILE_DIR.glob("*.toml")}
    assert files == {*PROFILES, *BASES} and not set(PROFILES) & set(BASES)


def main() -> None:
    """Rewrite the snapshot from the profiles as they are now."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    entries = resolved_profiles()
    SNAPSHOT.write_text(render(entries))
    log.info("wrote %d resolved profile entries to %s", len(entries), SNAPSHOT)


if __name__ == "__main__":
    main()
