"""What machine a figure was measured on: CPU model, the flags that decide matmul speed, and its class.

Machines of one kind differ (AMD with AVX512-BF16, Intel with AMX). oneDNN and TensorFlow pick
different kernels on each, so a short training run (the ``ci`` profile's StarDist, its GAN) lands on
different numbers per class while staying reproducible within one. Performance figures print
``cpu_description()``; the CI gate keeps its bounds per ``machine_class()``.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


@functools.cache
def _cpuinfo_fields() -> dict[str, str]:
    """The first value of each ``/proc/cpuinfo`` field (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() not in out:
            out[name.strip()] = value.strip()
    return out


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return frozenset(_cpuinfo_fields().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    return _cpuinfo_fields().get("model name") or platform.processor() or platform.machine()


def cpu_description(threads: int | None = None) -> str:
    """Model, thread count and the flags that decide matmul speed: printed beside every performance figure."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    flags = " ".join(f for f in wanted if f in cpu_flags()) or "none of avx2/avx512/amx"
    return f"{cpu_model()} x{threads or os.cpu_count()} threads [{flags}]"


def machine_class() -> str:
    """Vendor and widest matmul ISA, e.g. ``intel-amx``, ``amd-avx512_bf16``, ``arm64``: the unit within
    which ``ci``-profile numbers are reproducible and comparable."""
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(_cpuinfo_fields().get("vendor_id", ""))
    if vendor is None:
        return platform.machine().lower() or "unknown"
    flags = cpu_flags()
    for isa in ("amx_tile", "avx512_bf16", "avx512f", "avx2"):
        if isa in flags:
            return f"{vendor}-{isa.removesuffix('_tile')}"
    return vendor
