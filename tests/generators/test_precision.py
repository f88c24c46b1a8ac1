"""``generators.precision``: what ``auto`` resolves to, and that bad values are refused when a config is built."""

from __future__ import annotations

import pytest

from benchmark import machine
from benchmark.config import config_from_dict
from generators import precision
from generators.bvdm.generator import BVDMConfig
from generators.bvdm.sampler import SamplerConfig


@pytest.mark.parametrize(("flags", "expected"), [({"avx512f", "avx512_bf16"}, "bf16"),
                                                 ({"amx_bf16", "amx_tile"}, "bf16"),
                                                 ({"avx2", "avx512f"}, "fp32")])
def test_auto_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # honoured, emulated where not native


def test_the_machine_reports_its_model_and_flags() -> None:
    described = precision.cpu_description()
    assert machine.cpu_model() in described and "[" in described


@pytest.mark.parametrize("build", [lambda: config_from_dict(BVDMConfig, {"sampling": {"precision": "fp16"}}),
                                   lambda: config_from_dict(BVDMConfig, {"ddpm": {"precision": "half"}}),
                                   lambda: config_from_dict(BVDMConfig, {"flow": {"precision": "half"}}),
                                   lambda: SamplerConfig(precision="tf32")])
def test_unknown_precision_is_refused_when_the_config_is_built(build) -> None:
    with pytest.raises(ValueError, match="use one of fp32, bf16, auto"):
        build()
