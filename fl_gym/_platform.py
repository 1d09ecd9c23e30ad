"""What the bits of a run depend on besides the code: the CPU model (its vector units round the
batched products their own way, and OpenBLAS picks its kernels by it)."""

from __future__ import annotations

import platform

__all__ = ["cpu_model"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows of it."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
