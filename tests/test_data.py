"""Datasets: shapes, normalisation, caching, local files only, clear errors on missing paths."""
import numpy as np
import pytest
import torch

import symnas as sn


def test_digits_is_a_stratified_normalised_split():
    splits = sn.data.Digits().load()
    assert splits.x_train.shape == (1437, 1, 8, 8) and splits.x_test.shape == (360, 1, 8, 8)
    assert splits.num_classes == 10 and splits.input_shape == (1, 8, 8)
    assert abs(float(splits.x_train.mean())) < 1e-4
    assert torch.bincount(splits.y_test).min() >= 35


def test_load_is_cached_per_process():
    assert sn.data.Digits().load() is sn.data.Digits().load()
    assert sn.data.Digits(seed=1).load() is not sn.data.Digits().load()


def test_synthetic_is_deterministic_and_shaped_as_asked():
    a = sn.data.Synthetic(num_classes=3, image_shape=(2, 4, 4), train_size=30, test_size=9, seed=5)
    b = sn.data.Synthetic(num_classes=3, image_shape=(2, 4, 4), train_size=30, test_size=9, seed=5)
    sa, sb = a._load(), b._load()
    assert sa.x_train.shape == (30, 2, 4, 4) and sa.x_test.shape == (9, 2, 4, 4)
    assert torch.equal(sa.x_train, sb.x_train) and int(sa.y_train.max()) < 3


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sn.data.CIFAR10(root=str(missing)).load()
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg.npz"):
        sn.data.CIFAR10(root=str(tmp_path)).load()
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        sn.data.MNIST(root=str(tmp_path)).load()


def test_cifar10_reads_standard_python_batches(tmp_path):
    import pickle
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 4))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    splits = sn.data.CIFAR10(root=str(tmp_path)).load()
    assert splits.x_train.shape == (20, 3, 32, 32) and splits.x_test.shape == (4, 3, 32, 32)


def test_cifar10_from_batches_reports_missing_batches(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        sn.data.CIFAR10(root=str(tmp_path)).load()


def test_mnist_from_shared_npz(mnist_file):
    splits = sn.data.MNIST(root=str(mnist_file)).load()
    assert splits.x_train.shape == (60000, 1, 28, 28) and splits.y_test.shape == (10000,)
    assert splits.y_train[:5].tolist() == [5, 0, 4, 1, 9]


@pytest.mark.slow
def test_cifar10_from_shared_jpeg_container(cifar10_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNAS_CACHE", str(tmp_path))
    splits = sn.data.CIFAR10(root=str(cifar10_file)).load()
    assert splits.x_train.shape == (50000, 3, 32, 32) and splits.x_test.shape == (10000, 3, 32, 32)
    assert splits.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert list(tmp_path.glob("cifar10_decoded_*.npz"))
