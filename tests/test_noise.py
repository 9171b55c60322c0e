import numpy as np
import pytest

from ebomlc.config import TrainConfig
from ebomlc.data import build_noisy_data
from ebomlc.data.noise import (corrupt_labels, corruption_matrix, flip_matrix, gold_per_class,
                               split_gold_silver, uniform_matrix)
from ebomlc.errors import ConfigError


@pytest.mark.parametrize("kind", ["unif", "flip"])
@pytest.mark.parametrize("level", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_matrices_are_row_stochastic(kind, level):
    c = corruption_matrix(kind, level, 10, seed=3)
    assert c.shape == (10, 10)
    assert np.all(c >= 0)
    np.testing.assert_allclose(c.sum(axis=1), 1.0)


def test_uniform_matrix_formula():
    r, k = 0.4, 5
    c = uniform_matrix(r, k)
    np.testing.assert_allclose(np.diag(c), 1 - r + r / k)
    np.testing.assert_allclose(c[0, 1], r / k)


def test_flip_matrix_has_one_target_per_row():
    c = flip_matrix(0.3, 10, np.random.default_rng(0))
    for row in range(10):
        off = [j for j in range(10) if j != row and c[row, j] > 0]
        assert len(off) == 1 and np.isclose(c[row, off[0]], 0.3)
        assert np.isclose(c[row, row], 0.7)


@pytest.mark.parametrize("kind,level,k", [("unif", 0.4, 10), ("unif", 0.8, 100), ("flip", 0.2, 10), ("flip", 0.4, 100)])
def test_realised_rate_within_sampling_error(kind, level, k):
    n = 50_000
    y = np.random.default_rng(1).integers(0, k, n)
    noisy = corrupt_labels(y, corruption_matrix(kind, level, k, seed=5), seed=5)
    expected = level * (1 - 1 / k) if kind == "unif" else level
    rate = (noisy != y).mean()
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_noise_follows_the_matrix_per_class():
    k, n = 4, 40_000
    y = np.repeat(np.arange(k), n // k)
    c = corruption_matrix("flip", 0.3, k, seed=2)
    noisy = corrupt_labels(y, c, seed=9)
    for t in range(k):
        freq = np.bincount(noisy[y == t], minlength=k) / (n // k)
        np.testing.assert_allclose(freq, c[t], atol=0.02)


def test_split_is_disjoint_and_class_balanced():
    y = np.random.default_rng(0).integers(0, 10, 5000)
    gold, silver = split_gold_silver(y, 10, 0.02, seed=4)
    assert len(np.intersect1d(gold, silver)) == 0
    assert len(gold) + len(silver) == len(y)
    np.testing.assert_array_equal(np.bincount(y[gold], minlength=10), 10)


def test_gold_per_class_matches_cifar_numbers():
    assert gold_per_class(0.02, 50_000, 10) == 100
    assert gold_per_class(0.02, 50_000, 100) == 10
    with pytest.raises(ConfigError, match="fewer than one gold image per class"):
        gold_per_class(0.001, 1437, 10)


def test_same_seed_same_data_and_different_seed_differs(digits):
    a = build_noisy_data(digits, "unif", 0.5, 0.05, data_seed=7)
    b = build_noisy_data(digits, "unif", 0.5, 0.05, data_seed=7)
    c = build_noisy_data(digits, "unif", 0.5, 0.05, data_seed=8)
    np.testing.assert_array_equal(a.gold_index, b.gold_index)
    assert bool((a.silver_noisy == b.silver_noisy).all())
    assert not np.array_equal(a.gold_index, c.gold_index)
    assert 0.3 < a.realised_noise_rate() < 0.6
    assert a.summary()["realised_noise_rate"] == a.realised_noise_rate()


def test_bad_level_is_rejected():
    with pytest.raises(ConfigError, match=r"corruption_level must lie in \[0, 1\]"):
        TrainConfig(corruption_level=1.5).resolved()
    with pytest.raises(ConfigError, match="unknown corruption_type"):
        corruption_matrix("pairs", 0.2, 10, 0)


def test_train_subset_is_class_balanced_seeded_and_split_inside(digits):
    import torch

    from ebomlc.train import load_data

    def data(**kw):
        return load_data(TrainConfig(dataset="digits", gold_fraction=0.1, corruption_level=0.4, train_subset=500,
                                     **kw).resolved(), torch.device("cpu"))

    a, b, other = data(seed=1), data(seed=1), data(seed=2)
    n_gold, n_silver = len(a.gold_index), len(a.silver_index)
    assert n_gold + n_silver == 500  # 50 per class; gold and silver both come from the subset
    labels = np.concatenate([a.y_gold.numpy(), a.silver_true.numpy()])
    assert (np.bincount(labels, minlength=10) == 50).all()
    assert n_gold == 50 and (np.bincount(a.y_gold.numpy(), minlength=10) == 5).all()  # 10% of the subset
    for x, y in ((a.x_silver, b.x_silver), (a.x_gold, b.x_gold), (a.silver_noisy, b.silver_noisy)):
        assert torch.equal(x, y)  # same data seed: same subset, split and noise
    assert not torch.equal(a.x_silver, other.x_silver)  # another seed draws another subset
    # every image of the subset is a training image, none twice, and the test set is untouched
    train = {bytes(x) for x in digits.x_train.reshape(len(digits.x_train), -1)}
    chosen = [bytes(x) for x in torch.cat([a.x_gold, a.x_silver]).reshape(500, -1).numpy()]
    assert set(chosen) <= train
    assert torch.equal(a.x_test, torch.from_numpy(digits.x_test)) and len(a.y_test) == len(digits.y_test)


def test_train_subset_errors_are_one_line():
    from ebomlc.data.noise import class_balanced_subset

    labels = np.repeat(np.arange(3), [5, 5, 2])
    with pytest.raises(ConfigError, match="asks for 3 images of class 2, which has only 2; use at most 6"):
        class_balanced_subset(labels, 3, 9, 0)
    with pytest.raises(ConfigError, match="fewer than one image per class"):
        class_balanced_subset(labels, 3, 2, 0)
    assert sorted(np.bincount(labels[class_balanced_subset(labels, 3, 6, 0)])) == [2, 2, 2]
