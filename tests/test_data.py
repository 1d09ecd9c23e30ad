"""Data sets and partitions: splits, scaling, partition invariants, FedProx Synthetic recipe."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from fl_gym.sim.learning.data import (
    Dataset,
    FederatedDataset,
    federate,
    from_arrays,
    load_digits_dataset,
    make_federated_dataset,
    partition_dirichlet,
    partition_iid,
    partition_quantity_skew,
    partition_shards,
    synthetic_fedprox,
)

# -- helpers -----------------------------------------------------------------------------------


def _assert_partition(parts: tuple[np.ndarray, ...], num_samples: int, num_clients: int) -> None:
    """Disjoint, ascending int64 arrays, each non-empty, whose union is range(num_samples)."""
    assert len(parts) == num_clients
    for idx in parts:
        assert idx.dtype == np.int64 and idx.ndim == 1 and idx.size >= 1
        assert np.all(np.diff(idx) > 0)
    flat = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(flat), np.arange(num_samples))


def _label_entropy(counts: np.ndarray) -> float:
    """Mean over clients of the entropy (nats) of the client's label distribution."""
    p = counts / counts.sum(axis=1, keepdims=True)
    logs = np.log(np.where(p > 0, p, 1.0))
    return float(-(p * logs).sum(axis=1).mean())


def _label_counts(labels: np.ndarray, parts: tuple[np.ndarray, ...]) -> np.ndarray:
    classes = int(labels.max()) + 1
    return np.stack([np.bincount(labels[idx], minlength=classes) for idx in parts])


def _fedprox_reference(
    alpha: float, beta: float, seed: int, users: int = 30, d: int = 60, classes: int = 10
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The FedProx generator written as the repository's user-by-user loop, on a Generator."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, users).astype(int) + 50
    mean_w = rng.normal(0, alpha, users)
    centres = rng.normal(0, beta, users)
    cov = np.diag(np.arange(1, d + 1, dtype=np.float64) ** -1.2)
    mean_x = np.stack([rng.normal(centres[k], 1, d) for k in range(users)])
    xs, ys = [], []
    for k in range(users):
        w = rng.normal(mean_w[k], 1, (d, classes))
        b = rng.normal(mean_w[k], 1, classes)
        x = rng.multivariate_normal(mean_x[k], cov, sizes[k], method="cholesky")
        logits = x @ w + b
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        ys.append(np.argmax(soft / soft.sum(axis=1, keepdims=True), axis=1))
        xs.append(x.astype(np.float32))
    return sizes, xs, ys


def _user_rows(data: FederatedDataset, sizes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """User k's train + test samples (the test set is the users' test parts in user order)."""
    test_sizes = sizes - (0.9 * sizes).astype(np.int64)
    start = int(test_sizes[:k].sum())
    x_train, y_train = data.client_data(k)
    x = np.concatenate([x_train, data.x_test[start : start + test_sizes[k]]])
    y = np.concatenate([y_train, data.y_test[start : start + test_sizes[k]]])
    return x, y


def _sorted_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort(x.T[::-1])
    return x[order], y[order]


# -- digits ------------------------------------------------------------------------------------


def test_digits_split_sizes_and_stratification() -> None:
    data = load_digits_dataset(rng=np.random.default_rng(0))
    raw = load_digits()
    assert data.name == "digits" and data.num_classes == 10 and data.num_features == 64
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_test.shape == (round(0.25 * 1797), 64)
    assert data.x_train.shape == (1797 - 449, 64)
    total = np.bincount(raw.target, minlength=10)
    test = np.bincount(data.y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(data.y_train, minlength=10) + test, total)
    share = total * 449 / 1797
    assert np.all((test == np.floor(share)) | (test == np.ceil(share)))


def test_digits_standardised_with_training_statistics() -> None:
    data = load_digits_dataset(rng=np.random.default_rng(3))
    # Same split without scaling, then scaled here with numpy.
    raw = load_digits()
    split = from_arrays(raw.data, raw.target, num_classes=10, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(data.y_train, split.y_train)
    np.testing.assert_array_equal(data.y_test, split.y_test)
    x_train = split.x_train.astype(np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    constant = std == 0
    assert constant.any()  # the blank border pixels
    scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
    np.testing.assert_allclose(data.x_train, (x_train - mean) * scale, atol=1e-5)
    np.testing.assert_allclose(data.x_test, (split.x_test - mean) * scale, atol=1e-5)
    np.testing.assert_allclose(data.x_train[:, ~constant].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train[:, ~constant].std(axis=0), 1.0, atol=1e-5)
    assert np.all(data.x_train[:, constant] == 0) and np.all(data.x_test[:, constant] == 0)


def test_digits_split_depends_on_rng_only() -> None:
    a = load_digits_dataset(rng=np.random.default_rng(7))
    b = load_digits_dataset(rng=np.random.default_rng(7))
    c = load_digits_dataset(rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_test, c.x_test)


# -- from_arrays -------------------------------------------------------------------------------


def test_from_arrays_with_given_test_set_standardises_in_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (50, 4))
    x[:, 2] = 5.0
    x_test = rng.normal(0.0, 1.0, (7, 4))
    data = from_arrays(
        x, rng.integers(0, 3, 50), x_test=x_test, y_test=np.arange(7) % 3, standardize=True
    )
    expected = (x_test - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), np.inf)
    np.testing.assert_allclose(data.x_test, expected, atol=1e-5)
    assert data.num_classes == 3 and data.name == "custom"


def test_from_arrays_split_is_stratified_and_complete() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 31])
    x = np.arange(61, dtype=np.float64)[:, None]
    data = from_arrays(x, labels, test_fraction=0.2, rng=np.random.default_rng(1))
    assert data.x_test.shape[0] == round(0.2 * 61)
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 4, 6])
    # Every sample lands in exactly one split, with its own label.
    pooled = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(pooled), np.arange(61))
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), labels[pooled])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_from_arrays_rejects_non_finite_values_naming_where(bad: float) -> None:
    x = np.ones((6, 3))
    x[4, 1] = bad
    with pytest.raises(ValueError, match=r"x has 1 non-finite.*row 4, column 1"):
        from_arrays(x, np.arange(6) % 2, rng=np.random.default_rng(0))
    x_test = np.ones((2, 3))
    x_test[1, 2] = bad
    with pytest.raises(ValueError, match=r"x_test has 1 non-finite.*row 1, column 2"):
        from_arrays(np.ones((6, 3)), np.arange(6) % 2, x_test=x_test, y_test=np.array([0, 1]))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (np.ones(5), np.zeros(5, int), {}, ValueError, "2-D"),
        (np.ones((5, 2)), np.zeros((5, 1), int), {}, ValueError, "1-D"),
        (np.ones((5, 2)), np.zeros(5), {}, TypeError, "integer class labels"),
        (np.ones((5, 2)), np.zeros(4, int), {}, ValueError, "same length"),
        (np.ones((5, 2)), np.array([0, 1, -1, 0, 1]), {}, ValueError, "negative label -1"),
        (np.ones((5, 2)), np.array([0, 1, 5, 0, 1]), {"num_classes": 3}, ValueError, r"\[0, 3\)"),
        (np.ones((1, 2)), np.zeros(1, int), {}, ValueError, "at least 2 samples"),
        (np.ones((5, 2)), np.zeros(5, int), {}, ValueError, "single class"),
        (np.ones((5, 2)), np.arange(5) % 2, {"test_fraction": 1.0}, ValueError, r"\(0, 1\)"),
        (np.ones((5, 2)), np.arange(5) % 2, {"rng": 0}, TypeError, "numpy.random.Generator"),
        (np.ones((5, 2)), np.arange(5) % 2, {"x_test": np.ones((2, 2))}, ValueError, "together"),
        (np.array([["a", "b"]] * 5), np.arange(5) % 2, {}, TypeError, "real numbers"),
    ],
)
def test_from_arrays_validation(x, y, kwargs, error, match) -> None:
    kwargs = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(error, match=match):
        from_arrays(x, y, **kwargs)


# -- partitions: invariants --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.data())
def test_iid_partition_covers_every_sample_in_equal_parts(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    parts = partition_iid(n, k, rng=np.random.default_rng(n + k))
    _assert_partition(parts, n, k)
    sizes = np.array([p.size for p in parts])
    np.testing.assert_array_equal(sizes, n // k + (np.arange(k) < n % k))


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 400), st.integers(1, 12), st.data())
def test_dirichlet_partition_covers_every_sample(n: int, classes: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, max(1, n // 20)))
    alpha = data.draw(st.sampled_from([1.0, 10.0]))
    rng = np.random.default_rng(n * classes)
    labels = rng.integers(0, classes, n)
    parts = partition_dirichlet(labels, k, alpha=alpha, min_size=2, rng=rng)
    _assert_partition(parts, n, k)
    assert min(p.size for p in parts) >= 2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 12), st.data())
def test_shards_partition_covers_every_sample(n: int, classes: int, data: st.DataObject) -> None:
    per_client = data.draw(st.integers(1, 3))
    k = data.draw(st.integers(1, max(1, n // per_client)))
    per_client = min(per_client, n // k)
    rng = np.random.default_rng(n + 1000 * classes)
    parts = partition_shards(rng.integers(0, classes, n), k, shards_per_client=per_client, rng=rng)
    _assert_partition(parts, n, k)
    # Each client holds exactly per_client shards of floor or ceil(n / S) samples.
    shards = k * per_client
    sizes = np.array([p.size for p in parts])
    assert np.all(sizes >= per_client * (n // shards))
    assert np.all(sizes <= per_client * -(-n // shards))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.data())
def test_quantity_partition_covers_every_sample(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    min_size = data.draw(st.integers(1, n // k))
    sigma = data.draw(st.sampled_from([0.0, 0.5, 2.0]))
    parts = partition_quantity_skew(
        n, k, sigma=sigma, min_size=min_size, rng=np.random.default_rng(n + k)
    )
    _assert_partition(parts, n, k)
    assert min(p.size for p in parts) >= min_size


# -- partitions: behaviour ---------------------------------------------------------------------


def test_dirichlet_small_alpha_is_more_label_skewed() -> None:
    labels = np.repeat(np.arange(10), 100)
    entropy = {}
    for alpha in (0.1, 100.0):
        values = []
        for seed in range(5):
            parts = partition_dirichlet(
                labels, 10, alpha=alpha, min_size=5, rng=np.random.default_rng(seed)
            )
            values.append(_label_entropy(_label_counts(labels, parts)))
        entropy[alpha] = np.mean(values)
    # Uniform over 10 labels has entropy ln 10 = 2.30; alpha = 100 stays close to it.
    assert entropy[100.0] > 2.2
    assert entropy[0.1] < 1.2


def test_dirichlet_large_alpha_gives_each_client_an_equal_share_of_each_class() -> None:
    labels = np.repeat(np.arange(4), [400, 800, 1200, 1600])
    parts = partition_dirichlet(labels, 8, alpha=1e5, rng=np.random.default_rng(0))
    counts = _label_counts(labels, parts)
    share = np.array([400, 800, 1200, 1600]) / 8
    np.testing.assert_allclose(counts, np.broadcast_to(share, counts.shape), atol=3)


def test_dirichlet_gives_up_with_a_clear_error() -> None:
    labels = np.repeat([0, 1], 50)
    with pytest.raises(ValueError, match="larger alpha, a smaller min_size"):
        partition_dirichlet(
            labels, 50, alpha=0.01, min_size=2, rng=np.random.default_rng(0), max_tries=5
        )
    with pytest.raises(ValueError, match="exceeds the 100 samples"):
        partition_dirichlet(labels, 20, alpha=1.0, min_size=6, rng=np.random.default_rng(0))


def test_shards_give_each_client_at_most_shards_per_client_labels() -> None:
    labels = np.repeat(np.arange(10), 60)
    for per_client, clients in ((2, 10), (2, 30), (3, 20)):
        parts = partition_shards(
            labels, clients, shards_per_client=per_client, rng=np.random.default_rng(clients)
        )
        counts = _label_counts(labels, parts)
        assert np.all((counts > 0).sum(axis=1) <= per_client)
        np.testing.assert_array_equal(counts.sum(axis=1), 600 // clients)
        # Every non-zero count is a whole number of shards.
        shard = 600 // (clients * per_client)
        assert np.all(counts % shard == 0)


def test_quantity_skew_sizes_follow_the_lognormal_weights() -> None:
    n, k, min_size, sigma = 1000, 20, 5, 1.5
    parts = partition_quantity_skew(
        n, k, sigma=sigma, min_size=min_size, rng=np.random.default_rng(4)
    )
    sizes = np.array([p.size for p in parts])
    # The weights are the partitioner's first draw: redraw them and compare the shares.
    weights = np.random.default_rng(4).lognormal(0.0, sigma, k)
    expected = min_size + (n - k * min_size) * weights / weights.sum()
    assert np.all(np.abs(sizes - expected) < 1)
    assert sizes.sum() == n and sizes.min() >= min_size


def test_quantity_skew_grows_with_sigma() -> None:
    def spread(sigma: float) -> float:
        sizes = [
            [
                p.size
                for p in partition_quantity_skew(
                    2000, 20, sigma=sigma, rng=np.random.default_rng(s)
                )
            ]
            for s in range(5)
        ]
        return float(np.mean(np.std(sizes, axis=1) / np.mean(sizes, axis=1)))

    assert spread(0.0) < 0.01  # equal sizes up to rounding
    assert spread(0.3) < spread(1.0) < spread(2.0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: partition_iid(5, 6, rng=r), ValueError, r"num_clients=6 .*\[1, 5\]"),
        (lambda r: partition_iid(5, 0, rng=r), ValueError, "num_clients must be an integer >= 1"),
        (lambda r: partition_iid(5, 2.0, rng=r), TypeError, "num_clients"),
        (lambda r: partition_iid(5, 2, rng=None), TypeError, "numpy.random.Generator"),
        (lambda r: partition_dirichlet([0, 1] * 5, 2, alpha=0.0, rng=r), ValueError, "alpha"),
        (
            lambda r: partition_dirichlet([0, 1] * 5, 2, alpha=1, min_size=0, rng=r),
            ValueError,
            "min_size",
        ),
        (lambda r: partition_dirichlet([0.5, 1.0], 1, alpha=1, rng=r), TypeError, "integer"),
        (
            lambda r: partition_shards([0, 1] * 5, 4, shards_per_client=3, rng=r),
            ValueError,
            "12 shards",
        ),
        (lambda r: partition_quantity_skew(10, 2, sigma=-1.0, rng=r), ValueError, "sigma"),
        (lambda r: partition_quantity_skew(10, 3, min_size=4, rng=r), ValueError, "exceeds the 10"),
    ],
)
def test_partitioner_validation(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(np.random.default_rng(0))


# -- federate and the containers ---------------------------------------------------------------


def test_federate_keeps_arrays_and_reports_client_data() -> None:
    base = load_digits_dataset(rng=np.random.default_rng(0))
    data = federate(base, 7, partition="dirichlet", alpha=0.5, rng=np.random.default_rng(1))
    assert data.num_clients == 7 and data.num_features == 64 and data.num_classes == 10
    assert data.x_train is base.x_train and data.x_test is base.x_test
    np.testing.assert_array_equal(data.client_sizes, [idx.size for idx in data.client_indices])
    x3, y3 = data.client_data(3)
    np.testing.assert_array_equal(x3, base.x_train[data.client_indices[3]])
    counts = data.label_counts()
    np.testing.assert_array_equal(counts[3], np.bincount(y3, minlength=10))
    np.testing.assert_array_equal(counts.sum(axis=0), np.bincount(base.y_train, minlength=10))
    with pytest.raises(ValueError, match=r"k must lie in \[0, 7\)"):
        data.client_data(7)


def test_federate_rejects_unknown_partition_and_options() -> None:
    base = from_arrays(np.eye(8), np.arange(8) % 2, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"one of \['iid', 'dirichlet', 'shards', 'quantity'\]"):
        federate(base, 2, partition="pathological", rng=rng)
    with pytest.raises(TypeError, match=r"no option\(s\) \['alpha'\]"):
        federate(base, 2, partition="iid", alpha=0.3, rng=rng)
    with pytest.raises(TypeError, match="needs alpha"):
        federate(base, 2, partition="dirichlet", rng=rng)


def test_federated_dataset_rejects_overlapping_or_missing_indices() -> None:
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="more than once"):
        FederatedDataset(x, y, (np.array([0, 1]), np.array([1, 2, 3])), x, y, 2, "t")
    with pytest.raises(ValueError, match="1 row"):
        FederatedDataset(x, y, (np.array([0, 1]), np.array([2])), x, y, 2, "t")
    with pytest.raises(ValueError, match="hold no samples"):
        FederatedDataset(x, y, (np.arange(4), np.array([], int)), x, y, 2, "t")
    with pytest.raises(ValueError, match=r"label 2 .*\[0, 2\)"):
        Dataset(x, np.array([0, 1, 2, 0]), x, y, 2, "t")


def test_make_federated_dataset_names() -> None:
    data = make_federated_dataset("digits", 5, partition="shards", rng=np.random.default_rng(0))
    assert data.name == "digits" and data.num_clients == 5
    assert np.all((data.label_counts() > 0).sum(axis=1) <= 4)  # 2 shards, few straddle classes
    with pytest.raises(ValueError, match=r"one of \['digits', 'synthetic'\]"):
        make_federated_dataset("mnist", 5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="partition must be one of"):
        make_federated_dataset("digits", 5, partition="label", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no natural client split"):
        make_federated_dataset("digits", 5, partition="natural", rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="unknown option"):
        make_federated_dataset("synthetic", 5, min_size=3, rng=np.random.default_rng(0))


def test_make_federated_dataset_synthetic_matches_generator() -> None:
    direct = synthetic_fedprox(1.0, 1.0, num_users=12, rng=np.random.default_rng(5))
    named = make_federated_dataset("synthetic", 12, alpha=1, beta=1, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(direct.x_train, named.x_train)
    np.testing.assert_array_equal(direct.client_sizes, named.client_sizes)
    pooled = make_federated_dataset("synthetic", 12, partition="iid", rng=np.random.default_rng(5))
    # Re-partitioned: same samples, near-equal clients.
    np.testing.assert_array_equal(pooled.x_train, direct.x_train)
    assert pooled.client_sizes.max() - pooled.client_sizes.min() <= 1


# -- FedProx Synthetic(alpha, beta) ------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
def test_synthetic_matches_the_repository_recipe_drawn_user_by_user(alpha, beta) -> None:
    data = synthetic_fedprox(alpha, beta, rng=np.random.default_rng(11))
    sizes, xs, ys = _fedprox_reference(alpha, beta, seed=11)
    assert data.num_clients == 30 and data.num_features == 60 and data.num_classes == 10
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.client_sizes, (0.9 * sizes).astype(np.int64))
    assert data.x_test.shape == (int(sizes.sum() - data.client_sizes.sum()), 60)
    for k in (0, 7, 29):
        got_x, got_y = _sorted_rows(*_user_rows(data, sizes, k))
        want_x, want_y = _sorted_rows(xs[k], ys[k])
        np.testing.assert_array_equal(got_x, want_x)
        np.testing.assert_array_equal(got_y, want_y)


def test_synthetic_split_is_90_10_per_user_with_at_least_50_samples() -> None:
    data = synthetic_fedprox(0.5, 0.5, rng=np.random.default_rng(2))
    sizes = np.random.default_rng(2).lognormal(4, 2, 30).astype(np.int64) + 50
    assert sizes.min() >= 50
    test_sizes = sizes - data.client_sizes
    np.testing.assert_array_equal(data.client_sizes, np.floor(0.9 * sizes))
    assert data.y_test.shape[0] == test_sizes.sum()
    # The shuffle is random: some user's training part is not its first generated samples.
    _, xs, _ = _fedprox_reference(0.5, 0.5, seed=2)
    firsts = [
        np.array_equal(data.client_data(k)[0], xs[k][: data.client_sizes[k]]) for k in range(30)
    ]
    assert not all(firsts)


def test_synthetic_iid_shares_one_model() -> None:
    data = synthetic_fedprox(0, 0, iid=True, num_users=10, rng=np.random.default_rng(3))
    rng = np.random.default_rng(3)
    sizes = rng.lognormal(4, 2, 10).astype(np.int64) + 50
    w, b = rng.normal(0, 1, (60, 10)), rng.normal(0, 1, 10)
    # All users' samples are labelled by the shared (W, b) and centred on 0.
    x = np.concatenate([data.x_train, data.x_test]).astype(np.float64)
    y = np.concatenate([data.y_train, data.y_test])
    assert x.shape[0] == sizes.sum()
    np.testing.assert_array_equal(y, np.argmax(x @ w + b, axis=1))
    np.testing.assert_allclose(x.var(axis=0)[:3], np.arange(1, 4) ** -1.2, rtol=0.1)
    assert data.name == "synthetic_iid"
    with pytest.raises(ValueError, match="alpha=0, beta=0"):
        synthetic_fedprox(1, 0, iid=True, rng=rng)


def test_synthetic_one_one_is_more_heterogeneous_than_zero_zero() -> None:
    entropy, centre_spread = {}, {}
    for alpha_beta in (0.0, 1.0):
        ent, spread = [], []
        for seed in range(8):
            data = synthetic_fedprox(alpha_beta, alpha_beta, rng=np.random.default_rng(seed))
            ent.append(_label_entropy(data.label_counts()))
            owner = np.repeat(np.arange(30), data.client_sizes)
            order = np.concatenate(data.client_indices)
            sums = np.bincount(owner, weights=data.x_train[order].mean(axis=1), minlength=30)
            spread.append(np.var(sums / data.client_sizes))
        entropy[alpha_beta], centre_spread[alpha_beta] = np.mean(ent), np.mean(spread)
    # Users' feature centres v_k ~ N(B_k, 1) with B_k ~ N(0, beta^2): a user's mean feature
    # spreads over users with variance about beta^2 + 1/60.
    assert centre_spread[0.0] < 0.05
    assert 0.5 < centre_spread[1.0] < 1.6
    # Labels concentrate on fewer classes per user.
    assert entropy[1.0] < entropy[0.0] - 0.05


def test_synthetic_same_seed_same_arrays() -> None:
    a = synthetic_fedprox(1, 1, rng=np.random.default_rng(9))
    b = synthetic_fedprox(1, 1, rng=np.random.default_rng(9))
    c = synthetic_fedprox(1, 1, rng=np.random.default_rng(10))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    for left, right in zip(a.client_indices, b.client_indices, strict=True):
        np.testing.assert_array_equal(left, right)
    assert a.x_train.shape != c.x_train.shape or not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": -1.0, "beta": 0.0}, ValueError, "alpha must be a finite number >= 0"),
        ({"alpha": 0.0, "beta": float("nan")}, ValueError, "beta"),
        ({"alpha": 0.0, "beta": 0.0, "num_users": 0}, ValueError, "num_users"),
        ({"alpha": 0.0, "beta": 0.0, "num_classes": 1}, ValueError, "num_classes"),
        ({"alpha": 0.0, "beta": 0.0, "rng": 3}, TypeError, "numpy.random.Generator"),
    ],
)
def test_synthetic_validation(kwargs, error, match) -> None:
    kwargs = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(error, match=match):
        synthetic_fedprox(**kwargs)


def test_synthetic_alpha_shifts_every_logit_alike() -> None:
    # u_k is the mean of every entry of W_k and b_k, so it adds u_k * (sum(x) + 1) to every
    # class's logit: for the same draws, alpha changes no label (beta, the feature shift, does).
    base = synthetic_fedprox(0.0, 0.5, rng=np.random.default_rng(4))
    shifted = synthetic_fedprox(3.0, 0.5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(base.x_train, shifted.x_train)
    np.testing.assert_array_equal(base.y_train, shifted.y_train)
    np.testing.assert_array_equal(base.y_test, shifted.y_test)


def test_make_federated_dataset_synthetic_iid_and_natural() -> None:
    iid = make_federated_dataset("synthetic", 6, iid=True, rng=np.random.default_rng(1))
    assert iid.name == "synthetic_iid" and iid.num_clients == 6
    natural = make_federated_dataset(
        "synthetic",
        6,
        partition="natural",
        alpha=0.5,
        beta=0.5,
        dimension=8,
        num_classes=3,
        rng=np.random.default_rng(1),
    )
    assert natural.name == "synthetic(0.5,0.5)"
    assert natural.num_features == 8 and natural.num_classes == 3
