"""minifit.data.batches: seeded shuffling, per-batch conversion, transform and augmentation."""
import numpy as np
import pytest

from minifit.data import BatchIterator, Dataset, Pipeline, RandomFlip, Scale01


def _indexed(n=10):
    """Images whose pixels hold their own index, so batches can be traced back."""
    images = np.repeat(np.arange(n, dtype=np.uint8), 2 * 2 * 2).reshape(n, 2, 2, 2)
    return images, np.arange(n) % 3


def test_covers_every_example_once_in_order():
    images, labels = _indexed(10)
    it = BatchIterator((images, labels), 4)
    batches = list(it)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(it) == 3
    x = np.concatenate([x for x, _ in batches])
    assert x.dtype == np.float32 and (x[:, 0, 0, 0] == np.arange(10)).all()
    assert (np.concatenate([y for _, y in batches]) == labels).all()


def test_seeded_shuffle_is_reproducible_and_differs_per_epoch():
    images, labels = _indexed(50)
    def order(it):
        return np.concatenate([x[:, 0, 0, 0] for x, _ in it]).astype(int)
    a, b = BatchIterator((images, labels), 8, shuffle=True, seed=3), \
        BatchIterator((images, labels), 8, shuffle=True, seed=3)
    e0, e1 = order(a), order(a)
    assert sorted(e0) == list(range(50)) and sorted(e1) == list(range(50))
    assert (e0 != e1).any()                       # a new order each epoch
    assert (order(b) == e0).all()                 # same seed, same epoch: same order
    c = BatchIterator((images, labels), 8, shuffle=True, seed=3)
    c.epoch = 1
    assert (order(c) == e1).all()                 # resume at an epoch
    assert (order(BatchIterator((images, labels), 8, shuffle=True, seed=4)) != e0).any()


def test_labels_follow_images_when_shuffled():
    images, labels = _indexed(30)
    for x, y in BatchIterator((images, labels), 7, shuffle=True, seed=0, drop_last=True):
        assert len(y) == 7 and y.dtype == np.int64
        assert (y == x[:, 0, 0, 0].astype(int) % 3).all()


def test_transform_and_augment_per_batch():
    images, labels = _indexed(6)
    ds = Dataset("toy", "train", images, labels, ("a", "b", "c"), ())
    images[:, :, :, 1] = 200  # make left and right columns differ
    it = BatchIterator(ds, 6, transform=Pipeline(Scale01()), augment=[RandomFlip(p=1.0)],
                       dtype=np.float64)
    (x, _), = list(it)
    assert x.dtype == np.float64
    np.testing.assert_allclose(x[:, :, :, 0], 200 / 255)  # flipped after scaling
    assert images.dtype == np.uint8                       # the set itself stays uint8


def test_bad_arguments():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        BatchIterator((np.zeros((3, 1, 1, 1)), np.zeros(2)), 2)
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator((np.zeros((3, 1, 1, 1)), np.zeros(3)), 0)
