"""The code version of every stage: the one notion of "version" that stage caches, MLflow runs and result
bundles share, so that nothing computed by older code is ever served as current.

Raise a stage's number here when a change to its code changes its output. The number is part of the stage's
cache key (``benchmark.stages.Stages.folder``), its run's ``stage_version`` tag, the parent run's
``stage_versions`` tag and every result bundle's record (``benchmark.bundles``); ``report`` shows a bundle
whose versions differ from these as stale. It lives in the base layer (not in ``benchmark.stages``) so that the
report, which must not import the orchestration, can compare against it.
"""

from __future__ import annotations

import json

#: stage name -> code version (``eval-real``: both of its variants, full and partial held-out sequence)
STAGE_VERSIONS: dict[str, int] = {
    "window": 1, "fit": 1, "generate": 1, "floor": 1, "realism": 1, "texture-carry": 1, "oracle": 1, "training-set": 1,
    "train-segmenter": 1, "train-tracker": 1, "eval-real": 1,
}


def protocol_version() -> str:
    """The realism protocol's version (``benchmark.metrics.realism.PROTOCOL_VERSION``); imported here, on use,
    since the realism module pulls in numpy and scipy."""
    from benchmark.metrics.realism import PROTOCOL_VERSION

    return str(PROTOCOL_VERSION)


def version_tags() -> dict[str, str]:
    """A parent run's ``stage_versions`` (JSON) and ``protocol_version`` tags: the code that produced it."""
    return {"stage_versions": json.dumps(STAGE_VERSIONS, sort_keys=True), "protocol_version": protocol_version()}


def version_differences(stage_versions: dict[str, int] | None, protocol: str | None) -> list[str]:
    """Why a result recorded with these versions is stale under the current code (empty: it is current).
    Only the stages the result holds are compared; a result with no versions recorded is stale."""
    if stage_versions is None or protocol is None:
        return ["no code versions recorded"]
    out = [f"{name} v{got} (current v{STAGE_VERSIONS[name]})" for name, got in sorted(stage_versions.items())
           if name in STAGE_VERSIONS and int(got) != STAGE_VERSIONS[name]]
    out += [f"{name} (no longer a stage)" for name in sorted(stage_versions) if name not in STAGE_VERSIONS]
    if str(protocol) != protocol_version():
        out.append(f"realism protocol v{protocol} (current v{protocol_version()})")
    return out
