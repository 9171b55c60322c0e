"""The asym (class-pair) and instance-dependent noise models and the ``noisy_labels`` dispatcher."""
import numpy as np
import pytest

from ebomlc.data.noise import (ASYM_PAIRS, CIFAR100_COARSE, CORRUPTION_TYPES, asym_matrix, corrupt_labels,
                               corruption_matrix, instance_flip_rates, instance_noisy_labels, noisy_labels)
from ebomlc.errors import ConfigError

CIFAR10_PAIRS = {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}  # truck->automobile, bird->airplane, deer->horse, cat<->dog


def random_images(n: int, shape=(3, 8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_cifar10_asym_matrix_has_exactly_the_named_pairs():
    c = corruption_matrix("asym", 0.3, 10, seed=0, dataset="cifar10")
    np.testing.assert_allclose(c.sum(axis=1), 1.0)
    off = {(int(i), int(j)) for i, j in zip(*np.nonzero(c)) if i != j}
    assert off == CIFAR10_PAIRS
    for i, j in CIFAR10_PAIRS:
        assert c[i, i] == pytest.approx(0.7) and c[i, j] == pytest.approx(0.3)
    for i in {0, 1, 6, 7, 8}:
        np.testing.assert_array_equal(c[i], np.eye(10)[i])


def test_asym_labels_follow_only_the_named_pairs():
    n, level = 20_000, 0.3
    y = np.random.default_rng(3).integers(0, 10, n)
    noisy, c = noisy_labels("asym", level, y, 10, seed=4, dataset="cifar10")
    changed = noisy != y
    assert {(int(a), int(b)) for a, b in zip(y[changed], noisy[changed])} == CIFAR10_PAIRS
    for src in range(10):
        rate = changed[y == src].mean()
        if src in dict(CIFAR10_PAIRS):
            assert abs(rate - level) < 4 * np.sqrt(level * (1 - level) / (y == src).sum())
        else:
            assert rate == 0.0
    np.testing.assert_array_equal(c, asym_matrix(level, 10, "cifar10"))


def test_cifar100_table_and_superclass_cycles():
    coarse = np.array(CIFAR100_COARSE)
    assert len(coarse) == 100 and (np.bincount(coarse, minlength=20) == 5).all()
    # apple, aquarium_fish, baby, bear, beaver, whale, pickup_truck, tractor
    for fine, sup in [(0, 4), (1, 1), (2, 14), (3, 8), (4, 0), (95, 0), (58, 18), (89, 19)]:
        assert coarse[fine] == sup
    pairs = ASYM_PAIRS["cifar100"]
    assert sorted(pairs) == list(range(100)) and sorted(pairs.values()) == list(range(100))  # a permutation
    assert all(coarse[i] == coarse[j] and i != j for i, j in pairs.items())
    lengths, seen = [], set()
    for start in range(100):
        if start not in seen:
            cycle, i = [start], pairs[start]
            while i != start:
                cycle.append(i)
                i = pairs[i]
            seen.update(cycle)
            lengths.append(len(cycle))
    assert lengths == [5] * 20
    c = asym_matrix(0.4, 100, "cifar100")
    assert c[0, 51] == pytest.approx(0.4) and c[83, 0] == pytest.approx(0.4)  # apple -> mushroom, sweet_pepper -> apple
    assert c[4, 30] == pytest.approx(0.4)  # beaver -> dolphin, not beaver -> bed (blocks of 5 labels)
    np.testing.assert_allclose(c.sum(axis=1), 1.0)


def test_digits_asym_map():
    c = asym_matrix(0.25, 10, "digits")
    off = {(int(i), int(j)) for i, j in zip(*np.nonzero(c)) if i != j}
    assert off == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}
    assert np.allclose(np.diag(c)[[2, 3, 5, 6, 7]], 0.75) and np.allclose(np.diag(c)[[0, 1, 4, 8, 9]], 1.0)


def test_noise_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="class pairs for cifar10, cifar100 and digits only; for clothing1m use"):
        corruption_matrix("asym", 0.2, 14, 0, dataset="clothing1m")
    with pytest.raises(ConfigError, match="class pairs for cifar10"):
        corruption_matrix("asym", 0.2, 10, 0)
    with pytest.raises(ConfigError, match="asym noise for cifar10 maps 10 classes, but the data has 100"):
        corruption_matrix("asym", 0.2, 100, 0, dataset="cifar10")
    with pytest.raises(ConfigError, match="unif, flip, asym, instance"):
        noisy_labels("pairs", 0.2, np.zeros(3, int), 10, 0)
    with pytest.raises(ConfigError, match="pass the training images"):
        noisy_labels("instance", 0.2, np.zeros(3, int), 10, 0)
    with pytest.raises(ConfigError, match="no fixed corruption matrix"):
        corruption_matrix("instance", 0.2, 10, 0)
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        noisy_labels("instance", 1.2, np.zeros(3, int), 10, 0, images=random_images(3))
    with pytest.raises(ConfigError, match="uint8"):
        instance_flip_rates(random_images(3).astype(np.float32), 0.2, 0)
    assert CORRUPTION_TYPES == ("unif", "flip", "asym", "instance")


@pytest.mark.parametrize("kind,level,k", [("unif", 0.4, 10), ("flip", 0.4, 100), ("unif", 0.0, 10)])
def test_unif_and_flip_through_the_dispatcher_are_unchanged(kind, level, k):
    y = np.random.default_rng(2).integers(0, k, 5000)
    noisy, c = noisy_labels(kind, level, y, k, seed=11, images=random_images(5000), dataset="cifar10")
    old = corruption_matrix(kind, level, k, 11)
    np.testing.assert_array_equal(c, old)
    np.testing.assert_array_equal(noisy, corrupt_labels(y, old, 11))
    assert noisy.dtype == np.int64


def test_instance_noise_rate_varies_with_the_image():
    n, level = 5000, 0.4
    images, y = random_images(n), np.random.default_rng(1).integers(0, 10, n)
    q = instance_flip_rates(images, level, seed=3)
    noisy, c = noisy_labels("instance", level, y, 10, seed=3, images=images)
    flipped = noisy != y
    assert abs(flipped.mean() - level) < 0.02
    assert abs(q.mean() - level) < 0.01 and q.std() > 0.05 and q.min() >= 0 and q.max() <= 1
    top = q > np.median(q)
    assert flipped[top].mean() > flipped[~top].mean() + 0.08
    order = np.argsort(q)  # P(noisy == true) = 1 - q: calibrated within every decile of q
    for part in np.array_split(order, 10):
        assert abs(flipped[part].mean() - q[part].mean()) < 0.07
    # the empirical C[true, noisy] of the drawn labels
    np.testing.assert_allclose(c.sum(axis=1), 1.0)
    for t in range(10):
        np.testing.assert_allclose(c[t], np.bincount(noisy[y == t], minlength=10) / (y == t).sum())
    # the target of a flip depends on the image, not only on the class
    assert len(np.unique(noisy[flipped & (y == 0)])) > 3


def test_instance_noise_is_seeded_and_identical_images_get_identical_rates():
    n = 6000
    images, y = random_images(n, seed=5), np.random.default_rng(6).integers(0, 10, n)
    for a, b in [(0, 1), (2, 4097), (3, 5002), (7, 5999)]:  # copies in other chunks and row positions
        images[b] = images[a]
    q = instance_flip_rates(images, 0.3, seed=8)
    assert all(q[a] == q[b] for a, b in [(0, 1), (2, 4097), (3, 5002), (7, 5999)])
    first = instance_noisy_labels(images, y, 0.3, 10, seed=8)
    np.testing.assert_array_equal(first, instance_noisy_labels(images, y, 0.3, 10, seed=8))
    assert (first != instance_noisy_labels(images, y, 0.3, 10, seed=9)).mean() > 0.1
    np.testing.assert_array_equal(instance_noisy_labels(images, y, 0.0, 10, seed=8), y)
    assert (instance_flip_rates(images, 0.0, seed=8) == 0).all()
    same = np.repeat(images[:1], 10, axis=0)  # no spread among the projections: every rate is the level
    np.testing.assert_array_equal(instance_flip_rates(same, 0.3, seed=8), 0.3)


def test_instance_noise_pools_large_images_and_fills_empty_rows():
    images = random_images(400, shape=(3, 70, 50), seed=2)
    y = np.random.default_rng(3).integers(0, 5, 400)
    noisy, c = noisy_labels("instance", 0.5, y, 6, seed=1, images=images)
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 6
    assert 0.4 < (noisy != y).mean() < 0.6
    np.testing.assert_array_equal(c[5], np.eye(6)[5])  # no image of class 5
    assert c.shape == (6, 6) and np.allclose(c.sum(axis=1), 1.0)
