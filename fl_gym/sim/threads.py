"""The torch thread policy: fl_gym's own computations run on one intra-op thread by default.

fl_gym's tensors are small (a few thousand parameters per client): one thread is as fast as
several on a quiet machine and far faster on a busy one, where OpenMP threads that wait for cores
spin (measured in ``benchmarks/RESULTS.md``). Parallelism comes from batching, vector envs,
processes and Ray instead.

The setting is *scoped*: :func:`torch_threads` sets torch's intra-op thread count for the work
inside it and restores the caller's count afterwards, so a user's own torch work (an RL
algorithm's update, another model) keeps whatever it chose. Environments, vector environments,
controllers that train networks and :func:`fl_gym.agents.train` take ``num_threads`` (default
:data:`DEFAULT_NUM_THREADS`; ``None`` leaves torch's setting alone).

BLAS is a different matter: a few numpy/scipy computations (the SLSQP refinement of the
over-the-air beamformer) give other bits on another number of OpenBLAS threads, so a trajectory
would depend on the machine's core count or on ``OMP_NUM_THREADS``. :func:`single_blas_thread`
runs such a computation on one BLAS thread, whatever the process set, so that the same seed and
actions give the same trajectory under any thread setting (on one CPU model: another model's
OpenBLAS kernels round differently).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from threadpoolctl import ThreadpoolController

__all__ = [
    "DEFAULT_NUM_THREADS",
    "check_num_threads",
    "single_blas_thread",
    "torch_threads",
    "with_torch_threads",
]

DEFAULT_NUM_THREADS = 1
"""Intra-op threads fl_gym's computations use unless told otherwise."""

_F = TypeVar("_F", bound=Callable[..., Any])


def check_num_threads(num_threads: Any) -> int | None:
    """``num_threads`` if it is ``None`` or an integer >= 1, else a ``ValueError`` naming it."""
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(
            f"num_threads must be an integer >= 1 or None (leave torch's setting), "
            f"got {num_threads!r}"
        )
    return int(num_threads)


@contextmanager
def torch_threads(num_threads: int | None = DEFAULT_NUM_THREADS) -> Iterator[None]:
    """Run the body with torch on ``num_threads`` intra-op threads, then restore the count.

    ``None`` changes nothing. Scopes nest: the innermost one applies, each restores what it
    found.
    """
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    if before != num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def with_torch_threads(method: _F) -> _F:
    """Decorate a method so it runs under ``torch_threads(self.num_threads)``."""

    @functools.wraps(method)
    def scoped(self: Any, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(getattr(self, "num_threads", DEFAULT_NUM_THREADS)):
            return method(self, *args, **kwargs)

    return scoped  # type: ignore[return-value]


@functools.cache
def _blas_controller() -> ThreadpoolController:
    # Built on first use, when numpy's and scipy's BLAS libraries are loaded; inspecting the
    # process's libraries once instead of at every call.
    return ThreadpoolController()


_blas_lock = threading.RLock()


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the body with every loaded BLAS library on one thread, then restore their counts.

    For numpy/scipy computations whose bits depend on the BLAS thread count (a threaded BLAS
    splits some reductions by thread). torch's own threads are :func:`torch_threads`' business.
    The count is the process's, so scopes on several Python threads take turns (a re-entrant
    lock held for the body; nesting on one thread is free): none can lift the pin under another.
    Each scope sets and restores the count itself because OpenBLAS (0.3.31, measured) ignores a
    count set from a worker thread once the main thread has set one, so a limit set by one
    thread cannot stand for another's.
    """
    with _blas_lock, _blas_controller().limit(limits=1, user_api="blas"):
        yield
