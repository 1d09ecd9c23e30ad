"""Datasets and client partitions: what each client of a federation trains on.

Nothing is downloaded. The real data set is scikit-learn's bundled handwritten digits (1,797
8x8 images, 10 classes); the synthetic one is FedProx's Synthetic(alpha, beta) (Li et al., 2020),
generated with the recipe of the FedProx repository; users can bring their own arrays
(:func:`from_arrays`). Features are ``float32`` arrays ``(n, d)``, labels ``int64`` arrays ``(n,)``.

A :class:`Dataset` is centralised (train and test split); :func:`federate` spreads its training
samples over clients with one of the partitioners:

- ``"iid"``: a uniformly random split into near-equal parts (:func:`partition_iid`);
- ``"dirichlet"``: label skew, each class spread over clients by Dirichlet(alpha) proportions
  (:func:`partition_dirichlet`);
- ``"shards"``: label skew by sorting and sharding (:func:`partition_shards`, McMahan et al. 2017);
- ``"quantity"``: size skew, log-normal client sizes (:func:`partition_quantity_skew`).

Every partitioner returns one ``int64`` index array per client (ascending); the arrays are
disjoint and together hold every sample. Example::

    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", 10, partition="dirichlet", alpha=0.5, rng=rng)
    x0, y0 = data.client_data(0)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse

from fl_gym.sim.config import (
    MAX_DEVICES,
    check_choice,
    check_int,
    check_memory,
    check_positive,
    check_real,
    check_rng,
)

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "Dataset",
    "FederatedDataset",
    "federate",
    "from_arrays",
    "load_digits_dataset",
    "make_federated_dataset",
    "partition_dirichlet",
    "partition_iid",
    "partition_quantity_skew",
    "partition_shards",
    "synthetic_fedprox",
]

#: Names accepted by :func:`make_federated_dataset`.
DATASETS: tuple[str, ...] = ("digits", "synthetic")
#: Names accepted by :func:`federate` (``partition=``).
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "quantity")
#: Learning tasks a :class:`FederatedDataset` holds (``task=``).
TASKS: tuple[str, ...] = ("classification", "regression")


# -- validation helpers ------------------------------------------------------------------------


def _as_features(name: str, x: object) -> np.ndarray:
    """Return ``x`` as a finite ``float32`` matrix, or raise an error naming ``name``."""
    array = np.asarray(x)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(
            f"{name} must hold real numbers (integer or float), got dtype {array.dtype}"
        )
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {array.shape}")
    # Overflow is reported below as a non-finite value: a float64 beyond float32's range
    # becomes Inf in the cast, so finiteness is checked after it.
    with np.errstate(over="ignore"):
        features = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"{name} has {rows.size} non-finite value(s) (NaN, Inf or beyond float32 range), "
            f"first at row {rows[0]}, column {cols[0]}; all values must be finite"
        )
    return features


def _as_labels(name: str, y: object, num_samples: int | None = None) -> np.ndarray:
    """Return ``y`` as a non-negative ``int64`` vector, or raise an error naming ``name``."""
    array = np.asarray(y)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {array.dtype} "
            f"(convert with {name}.astype(numpy.int64) if the values are whole numbers)"
        )
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (samples,), got shape {array.shape}")
    if num_samples is not None and array.shape[0] != num_samples:
        raise ValueError(
            f"{name} has {array.shape[0]} labels but the features have {num_samples} rows; "
            "they must have the same length"
        )
    labels = array.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        where = int(np.argmax(labels < 0))
        raise ValueError(
            f"{name} holds negative label {labels[where]} at index {where}; labels must be >= 0"
        )
    return labels


def _check_label_range(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and labels.max() >= num_classes:
        where = int(np.argmax(labels >= num_classes))
        raise ValueError(
            f"{name} holds label {labels[where]} at index {where}; with num_classes="
            f"{num_classes} labels must lie in [0, {num_classes})"
        )


def _as_partition_labels(labels: object, where: str) -> np.ndarray:
    values = _as_labels("labels", labels)
    if values.size == 0:
        raise ValueError(f"{where} needs at least one sample, got an empty labels array")
    return values


def _check_num_clients(num_clients: object, num_samples: int) -> int:
    clients = check_int("num_clients", num_clients, minimum=1)
    if clients > num_samples:
        raise ValueError(
            f"num_clients={clients} exceeds the {num_samples} samples; every client needs at "
            f"least one sample, so num_clients must lie in [1, {num_samples}]"
        )
    return clients


# -- containers --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A centralised classification data set: a training split and a test split.

    Construction converts features to ``float32`` and labels to ``int64`` and validates them
    (shapes, finite values, labels in ``[0, num_classes)``).

    Attributes:
        x_train: ``(n_train, d)`` training features.
        y_train: ``(n_train,)`` training labels.
        x_test: ``(n_test, d)`` test features.
        y_test: ``(n_test,)`` test labels.
        num_classes: Number of classes ``C`` (labels lie in ``[0, C)``).
        name: Short name used in logs and reports.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        x_train, y_train, x_test, y_test = _validated_splits(
            self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes
        )
        # Frozen: the normalised arrays are stored through object.__setattr__, once.
        object.__setattr__(self, "x_train", x_train)
        object.__setattr__(self, "y_train", y_train)
        object.__setattr__(self, "x_test", x_test)
        object.__setattr__(self, "y_test", y_test)
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @property
    def num_features(self) -> int:
        """Number of feature columns ``d``."""
        return int(self.x_train.shape[1])


def _as_targets(name: str, y: object, num_samples: int, num_outputs: int) -> np.ndarray:
    """Regression targets ``(n, num_outputs)`` as finite ``float32``, or a clear error."""
    targets = _as_features(name, y)
    if targets.shape != (num_samples, num_outputs):
        raise ValueError(
            f"{name} must have shape ({num_samples}, {num_outputs}) (one row of "
            f"num_classes={num_outputs} regression targets per sample), got {targets.shape}"
        )
    return targets


def _validated_splits(
    x_train: object,
    y_train: object,
    x_test: object,
    y_test: object,
    num_classes: object,
    task: str = "classification",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    check_choice("task", task, TASKS)
    if task == "regression":
        outputs = check_int("num_classes", num_classes, minimum=1)
        xs_train = _as_features("x_train", x_train)
        xs_test = _as_features("x_test", x_test)
        ys_train = _as_targets("y_train", y_train, xs_train.shape[0], outputs)
        ys_test = _as_targets("y_test", y_test, xs_test.shape[0], outputs)
        if xs_test.shape[1] != xs_train.shape[1]:
            raise ValueError(
                f"x_test has {xs_test.shape[1]} features but x_train has {xs_train.shape[1]}; "
                "they must match"
            )
        return xs_train, ys_train, xs_test, ys_test
    classes = check_int("num_classes", num_classes, minimum=2)
    xs_train = _as_features("x_train", x_train)
    ys_train = _as_labels("y_train", y_train, xs_train.shape[0])
    xs_test = _as_features("x_test", x_test)
    ys_test = _as_labels("y_test", y_test, xs_test.shape[0])
    if xs_train.shape[0] < 1 or xs_test.shape[0] < 1:
        raise ValueError(
            f"both splits need at least one sample, got {xs_train.shape[0]} training and "
            f"{xs_test.shape[0]} test samples"
        )
    if xs_test.shape[1] != xs_train.shape[1]:
        raise ValueError(
            f"x_test has {xs_test.shape[1]} features but x_train has {xs_train.shape[1]}; "
            "they must match"
        )
    _check_label_range("y_train", ys_train, classes)
    _check_label_range("y_test", ys_test, classes)
    return xs_train, ys_train, xs_test, ys_test


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Training samples spread over ``K`` clients, plus a global test set.

    Attributes:
        x_train: ``(n, d)`` all clients' training features, concatenated.
        y_train: ``(n,)`` their labels.
        client_indices: For each client, the ``int64`` indices of its samples in ``x_train``;
            disjoint, every client holds at least one sample and together they hold all ``n``.
        x_test: ``(n_test, d)`` global test features.
        y_test: ``(n_test,)`` global test labels.
        num_classes: Number of classes ``C`` (for regression: number of target columns).
        name: Short name used in logs and reports.
        task: ``"classification"`` (integer labels) or ``"regression"``: then ``y_train`` and
            ``y_test`` are ``float32`` arrays ``(n, num_classes)`` of targets, fitted by least
            squares (e.g. positions in localisation).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    client_indices: tuple[np.ndarray, ...]
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    task: str = "classification"

    def __post_init__(self) -> None:
        x_train, y_train, x_test, y_test = _validated_splits(
            self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes, self.task
        )
        indices = _validated_client_indices(self.client_indices, x_train.shape[0])
        object.__setattr__(self, "x_train", x_train)
        object.__setattr__(self, "y_train", y_train)
        object.__setattr__(self, "x_test", x_test)
        object.__setattr__(self, "y_test", y_test)
        object.__setattr__(self, "client_indices", indices)
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @property
    def num_clients(self) -> int:
        """Number of clients ``K``."""
        return len(self.client_indices)

    @property
    def num_features(self) -> int:
        """Number of feature columns ``d``."""
        return int(self.x_train.shape[1])

    @property
    def client_sizes(self) -> np.ndarray:
        """``(K,)`` ``int64`` number of training samples of each client."""
        return np.array([idx.shape[0] for idx in self.client_indices], dtype=np.int64)

    def client_data(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One client's training samples.

        Args:
            k: Client index in ``[0, num_clients)``.

        Returns:
            ``(x, y)``: copies of the client's features ``(n_k, d)`` and labels ``(n_k,)``.
        """
        client = check_int("k", k, minimum=0)
        if client >= self.num_clients:
            raise ValueError(f"k must lie in [0, {self.num_clients}), got {k!r}")
        idx = self.client_indices[client]
        return self.x_train[idx], self.y_train[idx]

    def label_counts(self) -> np.ndarray:
        """Per-client class histogram.

        Returns:
            ``(K, C)`` ``int64``: entry ``[k, c]`` counts client ``k``'s samples of class ``c``.
        """
        if self.task != "classification":
            raise ValueError(f"label_counts needs a classification data set, this is {self.task}")
        owner = _owner_of_samples(self.client_indices, self.x_train.shape[0])
        flat = owner * self.num_classes + self.y_train
        counts = np.bincount(flat, minlength=self.num_clients * self.num_classes)
        return counts.reshape(self.num_clients, self.num_classes).astype(np.int64)

    def to_dataset(self) -> Dataset:
        """Pool the clients' samples into a centralised :class:`Dataset` (same test set).

        Returns:
            The pooled data set, e.g. to re-partition it with :func:`federate`.
        """
        if self.task != "classification":
            raise ValueError(f"to_dataset needs a classification data set, this is {self.task}")
        return Dataset(
            self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes, self.name
        )


def _owner_of_samples(client_indices: tuple[np.ndarray, ...], num_samples: int) -> np.ndarray:
    sizes = np.array([idx.shape[0] for idx in client_indices], dtype=np.int64)
    owner = np.empty(num_samples, dtype=np.int64)
    owner[np.concatenate(client_indices)] = np.repeat(np.arange(sizes.size), sizes)
    return owner


def _validated_client_indices(client_indices: object, num_samples: int) -> tuple[np.ndarray, ...]:
    if isinstance(client_indices, np.ndarray) or not isinstance(client_indices, (tuple, list)):
        raise TypeError(
            "client_indices must be a tuple or list of 1-D integer arrays (one per client), "
            f"got {type(client_indices).__name__}"
        )
    if len(client_indices) == 0:
        raise ValueError("client_indices is empty; a federated data set needs at least 1 client")
    arrays = []
    for k, idx in enumerate(client_indices):
        array = np.asarray(idx)
        if array.ndim != 1 or not (
            np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_
        ):
            raise TypeError(
                f"client_indices[{k}] must be a 1-D integer array, got dtype {array.dtype} "
                f"and shape {array.shape}"
            )
        arrays.append(array.astype(np.int64, copy=False))
    sizes = np.array([a.shape[0] for a in arrays])
    if np.any(sizes == 0):
        empty = np.flatnonzero(sizes == 0).tolist()
        raise ValueError(f"clients {empty} hold no samples; every client needs at least one")
    flat = np.concatenate(arrays)
    if flat.min() < 0 or flat.max() >= num_samples:
        raise ValueError(
            f"client_indices hold index {flat.min() if flat.min() < 0 else flat.max()}; "
            f"indices must lie in [0, {num_samples}) (rows of x_train)"
        )
    uses = np.bincount(flat, minlength=num_samples)
    if np.any(uses != 1):
        twice, never = np.flatnonzero(uses > 1), np.flatnonzero(uses == 0)
        raise ValueError(
            "client_indices must be disjoint and cover every row of x_train exactly once; "
            f"{twice.size} row(s) are used more than once (first {twice[:5].tolist()}) and "
            f"{never.size} row(s) by no client (first {never[:5].tolist()})"
        )
    return tuple(arrays)


# -- centralised data sets ---------------------------------------------------------------------


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, class by class.

    The test set holds ``round(test_fraction * n)`` samples (clipped to ``[1, n - 1]``); class
    ``c`` with ``n_c`` samples contributes ``floor`` or ``ceil`` of its share
    ``n_c * n_test / n``, the extra samples going to the classes with the largest remainders
    (Hamilton's method, ties to the smaller class index). Which samples of a class go to the
    test set is drawn from ``rng``. Both index arrays are returned in ascending order.
    """
    n = labels.shape[0]
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Integer arithmetic keeps the quotas exact (no float floor on n_c * n_test / n).
    scaled = counts * n_test
    per_class = scaled // n
    short = n_test - int(per_class.sum())
    per_class[np.argsort(-(scaled % n), kind="stable")[:short]] += 1
    # A random permutation, then a stable sort by class: samples grouped by class, in random
    # order inside each class; the first per_class[c] of class c go to the test set.
    perm = rng.permutation(n)
    grouped = perm[np.argsort(inverse[perm], kind="stable")]
    class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grouped_class = inverse[grouped]
    rank = np.arange(n) - class_start[grouped_class]
    is_test = rank < per_class[grouped_class]
    return np.sort(grouped[~is_test]), np.sort(grouped[is_test])


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both splits with the training split's per-feature mean and std (ddof 0).

    A feature constant over the training split carries no information a model could learn, and
    dividing by its zero std is undefined: it is set to 0 in both splits (even where a test value
    differs from the training constant).
    """
    x64 = x_train.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    # Exact constancy test: a float mean of identical values can leave a tiny nonzero std.
    constant = x_train.max(axis=0) == x_train.min(axis=0)
    scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
    train = ((x64 - mean) * scale).astype(np.float32)
    test = ((x_test.astype(np.float64) - mean) * scale).astype(np.float32)
    return train, test


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    test_fraction: float = 0.25,
    num_classes: int | None = None,
    name: str = "custom",
    standardize: bool = False,
    rng: np.random.Generator | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from users' own arrays.

    Without ``x_test``/``y_test`` the samples are split into train and test, stratified by
    class (see ``load_digits_dataset`` for the allocation), with the split drawn from ``rng``.

    Args:
        x: ``(n, d)`` real features (integer or float; stored as ``float32``), all finite.
        y: ``(n,)`` integer labels in ``[0, num_classes)``.
        x_test: Optional ``(n_test, d)`` test features; given with ``y_test``, no split is drawn.
        y_test: Optional ``(n_test,)`` test labels.
        test_fraction: Share of the samples held out for testing when splitting, in ``(0, 1)``.
        num_classes: Number of classes (>= 2); by default ``1 + the largest label``.
        name: Name of the data set.
        standardize: Standardise features with the training split's mean and std (features
            constant over the training split become 0).
        rng: Draws the split; required when ``x_test`` is not given.

    Returns:
        The data set.
    """
    features = _as_features("x", x)
    labels = _as_labels("y", y, features.shape[0])
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test and y_test must be given together or not at all")
    if x_test is not None:
        test_features = _as_features("x_test", x_test)
        test_labels = _as_labels("y_test", y_test, test_features.shape[0])
        if test_features.shape[1] != features.shape[1]:
            raise ValueError(
                f"x_test has {test_features.shape[1]} features but x has "
                f"{features.shape[1]}; they must match"
            )
        if features.shape[0] < 1 or test_features.shape[0] < 1:
            raise ValueError(
                f"need at least 1 training and 1 test sample, got {features.shape[0]} and "
                f"{test_features.shape[0]}"
            )
        all_labels = np.concatenate([labels, test_labels])
    else:
        fraction = check_real(
            "test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True
        )
        if features.shape[0] < 2:
            raise ValueError(
                f"splitting needs at least 2 samples (1 train, 1 test), got {features.shape[0]}"
            )
        generator = check_rng(rng, "from_arrays (to draw the train/test split)")
        train_idx, test_idx = _stratified_split(labels, fraction, generator)
        features, test_features = features[train_idx], features[test_idx]
        labels, test_labels = labels[train_idx], labels[test_idx]
        all_labels = np.concatenate([labels, test_labels])
    if num_classes is None:
        classes = int(all_labels.max()) + 1
        if classes < 2:
            raise ValueError(
                f"the labels hold a single class (largest label {classes - 1}); a classifier "
                "needs at least 2 classes (pass num_classes= if some classes have no samples)"
            )
    else:
        classes = check_int("num_classes", num_classes, minimum=2)
    if standardize:
        features, test_features = _standardize(features, test_features)
    return Dataset(features, labels, test_features, test_labels, classes, str(name))


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The raw digits, read once per process (parsing scikit-learn's CSV takes ~10 ms)."""
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits_dataset(*, test_fraction: float = 0.25, rng: np.random.Generator) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 64 features, 10 classes).

    The train/test split is stratified: the test set holds ``round(test_fraction * 1797)``
    images, each class contributing the floor or ceiling of its proportional share (largest
    remainders get the ceiling). Features (pixel intensities 0-16) are standardised with the
    training split's per-pixel mean and standard deviation; pixels constant over the training
    split (the always-blank border pixels) are 0 in both splits.

    Args:
        test_fraction: Share of the images held out for testing, in ``(0, 1)``.
        rng: Draws the split.

    Returns:
        The data set, named ``"digits"``.
    """
    generator = check_rng(rng, "load_digits_dataset")
    images, labels = _digits_arrays()
    return from_arrays(
        images,
        labels,
        test_fraction=test_fraction,
        num_classes=10,
        name="digits",
        standardize=True,
        rng=generator,
    )


# -- FedProx Synthetic(alpha, beta) ------------------------------------------------------------


SYNTHETIC_MEAN_SAMPLES_PER_USER = math.exp(4.0 + 2.0**2 / 2) + 50
"""Expected samples of a FedProx synthetic user, ``E[int(LogNormal(4, 2))] + 50`` (about 453)."""

SYNTHETIC_BYTES_PER_VALUE = 48
"""Peak bytes :func:`synthetic_fedprox` holds per sample and feature while it generates
(measured: 46 at 100 and 400 users), for its memory estimate."""


def synthetic_fedprox(
    alpha: float,
    beta: float,
    *,
    num_users: int = 30,
    dimension: int = 60,
    num_classes: int = 10,
    iid: bool = False,
    rng: np.random.Generator,
) -> FederatedDataset:
    """FedProx's Synthetic(alpha, beta) federated data set (Li et al., MLSys 2020).

    Follows the generators of the FedProx repository (``data/synthetic_*/generate_synthetic.py``
    and ``data/synthetic_iid/generate_iid.py``), with all draws from ``rng``, in this order:

    1. users' sample counts ``n_k = int(LogNormal(4, 2)) + 50``, all users first;
    2. non-IID: ``u_k ~ N(0, alpha^2)``, then ``B_k ~ N(0, beta^2)`` (alpha and beta are standard
       deviations), then each user's feature mean ``v_k`` with entries ``~ N(B_k, 1)``, user by
       user; then, user by user: ``W_k`` ``(d, C)`` with entries ``~ N(u_k, 1)``, ``b_k`` ``(C,)``
       with entries ``~ N(u_k, 1)``, and ``n_k`` samples ``x ~ N(v_k, diag(j^-1.2))``,
       ``j = 1..d``;
       IID: one shared ``W`` and ``b`` with entries ``~ N(0, 1)``, then each user's samples
       ``x ~ N(0, diag(j^-1.2))``;
    3. labels ``y = argmax softmax(x W_k + b_k)``;
    4. each user's samples shuffled, the first ``int(0.9 n_k)`` for training, the rest for
       testing; the union of the users' test parts is the global test set.

    Deviations from the original scripts, none of which changes the distribution: draws come
    from a ``numpy.random.Generator`` (the scripts use the global legacy RNG and Python's
    ``random`` for the shuffle, so values differ for any seed); ``x`` is drawn as
    ``v_k + sqrt(diag) * z`` (what ``multivariate_normal(..., method="cholesky")`` computes)
    rather than by numpy's SVD route; the label is the argmax of the logits, which equals the
    argmax of their softmax except where the scripts' unstabilised ``exp`` overflows (logits
    above ~709), where theirs degenerates to a NaN comparison; labels are ``int64`` and features
    ``float32``. The IID variant follows ``generate_iid.py``, which has no alpha or beta, so
    ``iid=True`` requires ``alpha == beta == 0``.

    A property of the recipe, kept as is: ``u_k`` is the mean of every entry of ``W_k`` and
    ``b_k``, so it adds the same ``u_k (sum(x) + 1)`` to every class's logit and changes no label
    of a given draw; users differ through their own draws of ``W_k`` and ``v_k`` and, as
    ``beta`` grows, through the spread of their feature centres ``B_k``.

    Args:
        alpha: Standard deviation of the users' model means ``u_k`` (model heterogeneity), >= 0.
        beta: Standard deviation of the users' feature-mean centres ``B_k`` (feature
            heterogeneity), >= 0.
        num_users: Number of users (clients) ``K``, at most
            :data:`~fl_gym.sim.config.MAX_DEVICES`.
        dimension: Feature dimension ``d``, at most 10,000.
        num_classes: Number of classes ``C``.
        iid: Generate the IID variant.
        rng: Source of every draw.

    Returns:
        The federated data set: client ``k`` holds user ``k``'s training samples.

    Raises:
        ValueError: A bad argument, or data whose generation would need more than
            :data:`~fl_gym.sim.config.MEMORY_LIMIT_BYTES` (checked once the users' sample
            counts are drawn, before the samples are).
    """
    alpha_std = check_positive("alpha", alpha, allow_zero=True)
    beta_std = check_positive("beta", beta, allow_zero=True)
    users = check_int("num_users", num_users, minimum=1, maximum=MAX_DEVICES)
    d = check_int("dimension", dimension, minimum=1, maximum=10_000)
    classes = check_int("num_classes", num_classes, minimum=2)
    if not isinstance(iid, (bool, np.bool_)):
        raise TypeError(f"iid must be a bool, got {iid!r}")
    if iid and (alpha_std != 0 or beta_std != 0):
        raise ValueError(
            f"the IID variant (generate_iid.py) has no alpha or beta; pass alpha=0, beta=0 with "
            f"iid=True, got alpha={alpha!r}, beta={beta!r}"
        )
    generator = check_rng(rng, "synthetic_fedprox")

    sizes = generator.lognormal(4.0, 2.0, users).astype(np.int64) + 50
    check_memory(
        "num_users x samples x dimension",
        (users, int(sizes.sum()), d),
        float(sizes.sum()) * d * SYNTHETIC_BYTES_PER_VALUE,
        "generating the synthetic data set",
    )
    feature_std = np.sqrt(np.arange(1, d + 1, dtype=np.float64) ** -1.2)
    user_of_sample = np.repeat(np.arange(users), sizes)
    total = int(sizes.sum())
    if iid:
        weights = generator.standard_normal((1, d, classes))
        biases = generator.standard_normal((1, classes))
        z = generator.standard_normal((total, d))
        x = z * feature_std
        model_of_sample = np.zeros(total, dtype=np.int64)
    else:
        model_mean = alpha_std * generator.standard_normal(users)
        centre = beta_std * generator.standard_normal(users)
        feature_mean = centre[:, None] + generator.standard_normal((users, d))
        # The scripts draw W_k, b_k and x_k user by user. One flat draw cut into per-user blocks
        # [W_k | b_k | x_k] reproduces that interleaved order without a loop over users.
        block = d * classes + classes + sizes * d
        block_start = np.concatenate([[0], np.cumsum(block)[:-1]])
        stream = generator.standard_normal(int(block.sum()))
        w_at = block_start[:, None] + np.arange(d * classes)
        b_at = block_start[:, None] + d * classes + np.arange(classes)
        weights = (model_mean[:, None] + stream[w_at]).reshape(users, d, classes)
        biases = model_mean[:, None] + stream[b_at]
        first_sample = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        row_in_user = np.arange(total) - first_sample[user_of_sample]
        x_at = (block_start[user_of_sample] + d * classes + classes + row_in_user * d)[
            :, None
        ] + np.arange(d)
        x = feature_mean[user_of_sample] + feature_std * stream[x_at]
        model_of_sample = user_of_sample

    # Block-diagonal sparse product: sample i (a row) meets only its own user's W, so all
    # users' logits come from one matrix product, whatever the users' sizes.
    models = weights.shape[0]
    columns = model_of_sample[:, None] * d + np.arange(d)
    design = scipy.sparse.csr_array(
        (x.ravel(), columns.ravel(), np.arange(0, total * d + 1, d)), shape=(total, models * d)
    )
    logits = design @ weights.reshape(models * d, classes) + biases[model_of_sample]
    labels = np.argmax(logits, axis=1).astype(np.int64)

    # Shuffle inside each user (random sort keys, grouped by user), then cut 90 / 10.
    order = np.lexsort((generator.random(total), user_of_sample))
    train_sizes = (0.9 * sizes).astype(np.int64)
    first_sample = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(total) - first_sample[user_of_sample[order]]
    is_train = rank < train_sizes[user_of_sample[order]]
    train_rows, test_rows = order[is_train], order[~is_train]
    train_start = np.concatenate([[0], np.cumsum(train_sizes)])
    client_indices = tuple(np.split(np.arange(train_start[-1], dtype=np.int64), train_start[1:-1]))
    name = "synthetic_iid" if iid else f"synthetic({alpha_std:g},{beta_std:g})"
    return FederatedDataset(
        x_train=x[train_rows].astype(np.float32),
        y_train=labels[train_rows],
        client_indices=client_indices,
        x_test=x[test_rows].astype(np.float32),
        y_test=labels[test_rows],
        num_classes=classes,
        name=name,
    )


# -- partitioners ------------------------------------------------------------------------------


def _split_by_owner(owner: np.ndarray, num_clients: int) -> tuple[np.ndarray, ...]:
    """Turn a per-sample client id into per-client ascending index arrays."""
    order = np.argsort(owner, kind="stable").astype(np.int64)
    sizes = np.bincount(owner, minlength=num_clients)
    return tuple(np.split(order, np.cumsum(sizes)[:-1]))


def partition_iid(
    num_samples: int, num_clients: int, *, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Uniformly random split into near-equal parts.

    Client ``k`` gets ``num_samples // num_clients`` samples, plus one for the first
    ``num_samples % num_clients`` clients; which samples is drawn from ``rng``.

    Args:
        num_samples: Number of samples ``n`` >= 1.
        num_clients: Number of clients ``K`` in ``[1, n]``.
        rng: Draws the split.

    Returns:
        ``K`` disjoint ascending ``int64`` index arrays covering ``range(n)``.
    """
    n = check_int("num_samples", num_samples, minimum=1)
    clients = _check_num_clients(num_clients, n)
    generator = check_rng(rng, "partition_iid")
    sizes = np.full(clients, n // clients, dtype=np.int64)
    sizes[: n % clients] += 1
    owner = generator.permutation(np.repeat(np.arange(clients), sizes))
    return _split_by_owner(owner, clients)


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    min_size: int = 10,
    rng: np.random.Generator,
    max_tries: int = 1000,
) -> tuple[np.ndarray, ...]:
    """Dirichlet label skew (Hsu et al. 2019; the split of common FL benchmark code).

    For every class ``c`` the proportions ``p_c ~ Dirichlet(alpha * 1_K)`` are drawn, the class's
    samples are shuffled and cut at ``floor(cumsum(p_c) * n_c)``; client ``k`` gets the ``k``-th
    piece. Small ``alpha`` gives each client few classes, large ``alpha`` approaches an IID
    split. The whole draw is repeated until every client holds at least ``min_size`` samples.
    Unlike some benchmark code, no proportion is zeroed for clients that already hold more than
    the average, so the proportions stay Dirichlet-distributed.

    Args:
        labels: ``(n,)`` integer class labels (classes without samples are ignored).
        num_clients: Number of clients ``K`` in ``[1, n]``.
        alpha: Dirichlet concentration, > 0.
        min_size: Fewest samples a client may hold, >= 1 (and ``K * min_size <= n``).
        rng: Draws the split.
        max_tries: Draws attempted before giving up, >= 1.

    Returns:
        ``K`` disjoint ascending ``int64`` index arrays covering ``range(n)``.
    """
    values = _as_partition_labels(labels, "partition_dirichlet")
    n = values.shape[0]
    clients = _check_num_clients(num_clients, n)
    concentration = check_positive("alpha", alpha)
    smallest = check_int("min_size", min_size, minimum=1)
    tries = check_int("max_tries", max_tries, minimum=1)
    generator = check_rng(rng, "partition_dirichlet")
    if clients * smallest > n:
        raise ValueError(
            f"num_clients * min_size = {clients} * {smallest} = {clients * smallest} exceeds "
            f"the {n} samples; use fewer clients or a smaller min_size"
        )
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    positions = np.arange(n)
    for _ in range(tries):
        proportions = generator.dirichlet(np.full(clients, concentration), size=counts.size)
        perm = generator.permutation(n)
        if not np.all(np.isfinite(proportions)):
            continue
        grouped = perm[np.argsort(inverse[perm], kind="stable")]
        # Cut points of every class as positions in the class-grouped order; row-major they
        # are non-decreasing, so one searchsorted finds the (class, client) piece of each
        # position without a loop over classes or clients.
        cuts = np.floor(np.cumsum(proportions, axis=1) * counts[:, None]).astype(np.int64)
        cuts[:, -1] = counts  # float cumsum may stop short of exactly 1
        bounds = (class_start[:, None] + cuts).ravel()
        piece = np.searchsorted(bounds, positions, side="right")
        owner = np.empty(n, dtype=np.int64)
        owner[grouped] = piece % clients
        if np.bincount(owner, minlength=clients).min() >= smallest:
            return _split_by_owner(owner, clients)
    raise ValueError(
        f"no Dirichlet(alpha={concentration:g}) split of {n} samples over {clients} clients gave "
        f"every client >= min_size={smallest} samples in max_tries={tries} draws; use a larger "
        "alpha, a smaller min_size, fewer clients or a larger max_tries"
    )


def partition_shards(
    labels: np.ndarray,
    num_clients: int,
    *,
    shards_per_client: int = 2,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Shard label skew (McMahan et al. 2017).

    Samples are sorted by label (random order inside a class), cut into
    ``S = num_clients * shards_per_client`` contiguous shards of near-equal size (shard ``j``
    spans positions ``floor(j n / S)`` to ``floor((j + 1) n / S)``), and each client gets
    ``shards_per_client`` shards drawn at random without replacement. When every class size is
    a multiple of the shard size, a client holds at most ``shards_per_client`` classes.

    Args:
        labels: ``(n,)`` integer class labels.
        num_clients: Number of clients ``K`` >= 1.
        shards_per_client: Shards per client, >= 1 (and ``K * shards_per_client <= n``).
        rng: Draws the order inside classes and the shard assignment.

    Returns:
        ``K`` disjoint ascending ``int64`` index arrays covering ``range(n)``.
    """
    values = _as_partition_labels(labels, "partition_shards")
    n = values.shape[0]
    clients = _check_num_clients(num_clients, n)
    per_client = check_int("shards_per_client", shards_per_client, minimum=1)
    generator = check_rng(rng, "partition_shards")
    shards = clients * per_client
    if shards > n:
        raise ValueError(
            f"num_clients * shards_per_client = {clients} * {per_client} = {shards} shards "
            f"exceed the {n} samples; every shard needs at least one sample"
        )
    perm = generator.permutation(n)
    grouped = perm[np.argsort(values[perm], kind="stable")]
    shard_start = (np.arange(shards + 1) * n) // shards
    shard_of_position = np.searchsorted(shard_start, np.arange(n), side="right") - 1
    shard_owner = np.empty(shards, dtype=np.int64)
    shard_owner[generator.permutation(shards)] = np.arange(shards) // per_client
    owner = np.empty(n, dtype=np.int64)
    owner[grouped] = shard_owner[shard_of_position]
    return _split_by_owner(owner, clients)


def partition_quantity_skew(
    num_samples: int,
    num_clients: int,
    *,
    sigma: float = 1.0,
    min_size: int = 1,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Quantity skew: log-normal client sizes, samples drawn uniformly at random.

    Weights ``w_k ~ LogNormal(0, sigma)`` are drawn; every client gets ``min_size`` samples and
    the remaining ``r = n - K * min_size`` are shared in proportion to ``w``: client ``k``'s
    extra count is the difference of consecutive ``floor(r * cumsum(w) / sum(w))`` (so it is
    within 1 of ``r w_k / sum(w)`` and the sizes sum to ``n``). ``sigma = 0`` gives near-equal
    sizes; the larger ``sigma``, the more unequal.

    Args:
        num_samples: Number of samples ``n`` >= 1.
        num_clients: Number of clients ``K`` >= 1.
        sigma: Standard deviation of the log-weights, >= 0.
        min_size: Fewest samples a client may hold, >= 1 (and ``K * min_size <= n``).
        rng: Draws the weights, then which samples each client gets.

    Returns:
        ``K`` disjoint ascending ``int64`` index arrays covering ``range(n)``.
    """
    n = check_int("num_samples", num_samples, minimum=1)
    clients = _check_num_clients(num_clients, n)
    spread = check_positive("sigma", sigma, allow_zero=True)
    smallest = check_int("min_size", min_size, minimum=1)
    generator = check_rng(rng, "partition_quantity_skew")
    if clients * smallest > n:
        raise ValueError(
            f"num_clients * min_size = {clients} * {smallest} = {clients * smallest} exceeds "
            f"the {n} samples; use fewer clients or a smaller min_size"
        )
    weights = generator.lognormal(0.0, spread, clients)
    rest = n - clients * smallest
    cuts = np.floor(np.cumsum(weights) / weights.sum() * rest).astype(np.int64)
    cuts[-1] = rest  # float cumsum may stop short of exactly 1
    sizes = smallest + np.diff(cuts, prepend=0)
    owner = generator.permutation(np.repeat(np.arange(clients), sizes))
    return _split_by_owner(owner, clients)


# -- federating --------------------------------------------------------------------------------

_PARTITION_OPTIONS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "min_size", "max_tries"),
    "shards": ("shards_per_client",),
    "quantity": ("sigma", "min_size"),
}

_PARTITIONERS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "iid": lambda labels, k, rng, **kw: partition_iid(labels.shape[0], k, rng=rng, **kw),
    "dirichlet": lambda labels, k, rng, **kw: partition_dirichlet(labels, k, rng=rng, **kw),
    "shards": lambda labels, k, rng, **kw: partition_shards(labels, k, rng=rng, **kw),
    "quantity": lambda labels, k, rng, **kw: partition_quantity_skew(
        labels.shape[0], k, rng=rng, **kw
    ),
}


def federate(
    dataset: Dataset,
    num_clients: int,
    *,
    partition: str = "iid",
    rng: np.random.Generator,
    **partition_kwargs: Any,
) -> FederatedDataset:
    """Spread a data set's training samples over clients.

    Args:
        dataset: The centralised data set; its test set becomes the global test set.
        num_clients: Number of clients ``K``.
        partition: One of ``"iid"`` (:func:`partition_iid`), ``"dirichlet"``
            (:func:`partition_dirichlet`, needs ``alpha``), ``"shards"``
            (:func:`partition_shards`) or ``"quantity"`` (:func:`partition_quantity_skew`).
        rng: Draws the partition.
        **partition_kwargs: Options of the chosen partitioner (e.g. ``alpha=0.5``).

    Returns:
        The federated data set (same arrays as ``dataset``, plus the client indices).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset must be a fl_gym.sim.learning.data.Dataset, got {type(dataset).__name__}"
        )
    if partition not in _PARTITIONERS:
        raise ValueError(f"partition must be one of {list(PARTITIONS)}, got {partition!r}")
    allowed = _PARTITION_OPTIONS[partition]
    unknown = sorted(set(partition_kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"partition={partition!r} takes no option(s) {unknown}; allowed: {list(allowed)}"
        )
    if partition == "dirichlet" and "alpha" not in partition_kwargs:
        raise TypeError("partition='dirichlet' needs alpha= (Dirichlet concentration > 0)")
    generator = check_rng(rng, "federate")
    indices = _PARTITIONERS[partition](dataset.y_train, num_clients, generator, **partition_kwargs)
    return FederatedDataset(
        x_train=dataset.x_train,
        y_train=dataset.y_train,
        client_indices=indices,
        x_test=dataset.x_test,
        y_test=dataset.y_test,
        num_classes=dataset.num_classes,
        name=dataset.name,
    )


_SYNTHETIC_OPTIONS: tuple[str, ...] = ("alpha", "beta", "dimension", "num_classes", "iid")


def make_federated_dataset(
    name: str,
    num_clients: int,
    *,
    rng: np.random.Generator,
    partition: str | None = None,
    **kwargs: Any,
) -> FederatedDataset:
    """Build a named federated data set in one call.

    - ``"digits"``: :func:`load_digits_dataset` (option ``test_fraction``), then
      :func:`federate` with ``partition`` (``None`` means ``"iid"``) and the partitioner's
      options.
    - ``"synthetic"``: :func:`synthetic_fedprox` with ``num_users = num_clients`` (options
      ``alpha``, ``beta``, ``dimension``, ``num_classes``, ``iid``; ``alpha`` and ``beta``
      default to 1, or to 0 with ``iid=True``). With ``partition=None`` or ``"natural"`` each
      client is one FedProx user; with a partitioner's name the users' training samples are
      pooled and re-partitioned over the ``num_clients`` clients by it.

    Args:
        name: ``"digits"`` or ``"synthetic"``.
        num_clients: Number of clients ``K``.
        rng: Source of every draw.
        partition: Partitioner name (see :func:`federate`), or ``None`` for the data set's
            default.
        **kwargs: Options of the data set and of the partitioner.

    Returns:
        The federated data set.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {list(DATASETS)}, got {name!r}")
    if partition is not None and partition not in PARTITIONS and partition != "natural":
        raise ValueError(
            f"partition must be one of {list(PARTITIONS)} (or 'natural' for 'synthetic'), "
            f"got {partition!r}"
        )
    generator = check_rng(rng, "make_federated_dataset")
    if name == "digits":
        if partition == "natural":
            raise ValueError(
                "the digits data set has no natural client split; use partition in "
                f"{list(PARTITIONS)}"
            )
        loader_kwargs = {key: kwargs.pop(key) for key in ("test_fraction",) if key in kwargs}
        dataset = load_digits_dataset(rng=generator, **loader_kwargs)
        return federate(
            dataset,
            num_clients,
            partition="iid" if partition is None else partition,
            rng=generator,
            **kwargs,
        )
    options = {key: kwargs.pop(key) for key in _SYNTHETIC_OPTIONS if key in kwargs}
    iid = options.pop("iid", False)
    default_std = 0.0 if iid is True else 1.0
    alpha = options.pop("alpha", default_std)
    beta = options.pop("beta", default_std)
    users = check_int("num_clients", num_clients, minimum=1)
    if partition in (None, "natural"):
        if kwargs:
            raise TypeError(
                f"unknown option(s) {sorted(kwargs)} for 'synthetic'; allowed: "
                f"{list(_SYNTHETIC_OPTIONS)} (partitioner options need partition=)"
            )
        return synthetic_fedprox(alpha, beta, num_users=users, iid=iid, rng=generator, **options)
    data = synthetic_fedprox(alpha, beta, num_users=users, iid=iid, rng=generator, **options)
    return federate(data.to_dataset(), users, partition=partition, rng=generator, **kwargs)
