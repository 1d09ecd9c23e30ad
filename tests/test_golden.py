"""Every environment replays its committed golden trajectories bit for bit.

The files in ``tests/golden/`` were recorded by ``tests/golden/trajectories.py`` (which also
describes what they hold). A restructuring must leave them matching; a change of dynamics bumps
the environment's version and re-records them in the same commit. Bits depend on the CPU and the
torch / numpy builds as well as on the code: on a machine other than the recording one the
comparison is to a relative 1e-5 instead (and says so), so a port does not fail spuriously while
a real change of dynamics still does. An environment whose trajectory follows the OpenBLAS
kernel family (the over-the-air beamformer's SLSQP) has a variant per family,
``<id>@<kernel>.npz``, and is compared with the one of the family it runs on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import trajectories

NAMES = trajectories.names()


def test_every_environment_has_a_golden_file() -> None:
    stored = sorted(p.name for p in trajectories.DIRECTORY.glob("*.npz") if "@" not in p.name)
    assert stored == sorted(trajectories.file_for(n).name for n in NAMES)
    variants = {p.name for p in trajectories.DIRECTORY.glob("*@*.npz")}
    known = {p.name for n in NAMES for p in trajectories.variants(n).values()}
    assert variants == known


def _golden_file(name: str) -> Path:
    """The recording made under this process's OpenBLAS kernel family if there is one (see
    :func:`trajectories.blas_kernel`), else the main one."""
    return trajectories.variants(name).get(trajectories.blas_kernel(), trajectories.file_for(name))


@pytest.mark.parametrize("name", NAMES)
def test_replay_matches_golden(name: str) -> None:
    with np.load(_golden_file(name)) as golden:
        expected = {k: golden[k] for k in golden.files}
    recorded_on = str(expected.pop("__machine__"))
    expected.pop("__blas__", None)
    exact = recorded_on == trajectories.machine()
    replay = trajectories.record(name)
    assert sorted(replay) == sorted(expected), "the recorded quantities changed"
    for key, want in expected.items():
        got = replay[key]
        assert got.shape == want.shape and got.dtype == want.dtype, key
        if exact or want.dtype.kind not in "f":
            assert np.array_equal(got, want, equal_nan=True), (
                f"{name} {key}: differs from the golden trajectory "
                f"(max abs diff {np.max(np.abs(got.astype(float) - want.astype(float))):.3g})"
            )
        else:
            np.testing.assert_allclose(
                got, want, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key} (recorded on {recorded_on})"
            )
