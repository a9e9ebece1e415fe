"""The floating-point platform a test session runs on: numpy's version, the SIMD targets its
loops dispatch to and OpenBLAS's kernel set. The regression fixture is bit for bit, so it holds
the platform it was recorded on and its test first checks that this session runs the same one
(``tests/conftest.py`` pins the kernels so that every x86-64 CPU with AVX2 does)."""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np


def blas_core() -> str:
    """The kernel set OpenBLAS chose (``Haswell``, ``Zen``, ``SkylakeX``...), or ``unknown``."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                  "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            corename = getattr(lib, name, None)
            if corename is not None:
                corename.restype = ctypes.c_char_p
                return corename().decode()
    return "unknown"


def simd_targets() -> list[str]:
    """numpy's dispatch targets that are enabled in this process."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]


def platform() -> dict:
    return {"numpy": np.__version__, "simd": simd_targets(), "blas": blas_core()}
