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


def _jpeg_container(path, n_train=12, n_test=4):
    """A small file in the layout of cifar10_jpeg.npz (JPEG bytes, offsets, labels)."""
    import io
    from PIL import Image
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        blobs = []
        for _ in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
            blobs.append(buffer.getvalue())
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
        arrays[f"y_{split}"] = rng.integers(0, 10, n).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_cifar10_batch_is_the_same_whether_decoded_alone_or_from_the_loaded_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNAS_CACHE", str(tmp_path / "cache"))
    root = str(_jpeg_container(tmp_path / "cifar10_jpeg.npz"))
    x, y = sn.data.CIFAR10(root=root).batch(5, seed=3)          # five images decoded, nothing cached
    assert x.shape == (5, 3, 32, 32) and not (tmp_path / "cache").exists()
    splits = sn.data.CIFAR10(root=root).load()                  # the whole set, decoded and cached
    index = torch.from_numpy(np.random.default_rng(3).choice(12, 5, replace=False))
    assert torch.equal(x, splits.x_train[index]) and torch.equal(y, splits.y_train[index])
    assert torch.equal(sn.data.CIFAR10(root=root).batch(5, seed=3)[0], x)     # from the memory cache
    # standardised by the published statistics: (pixel / 255 - mean / 255) / (std / 255) per channel
    import io
    from PIL import Image
    with np.load(root) as d:
        first = d["train_jpeg"].tobytes()[d["train_offsets"][0]:d["train_offsets"][1]]
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).astype(np.float32))
    expected = (pixels.permute(2, 0, 1) - torch.tensor([125.3, 123.0, 113.9])[:, None, None]) / \
        torch.tensor([63.0, 62.1, 66.7])[:, None, None]
    assert torch.allclose(splits.x_train[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="size must be in 1..4"):
        sn.data.CIFAR10(root=root).batch(5, split="test")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        sn.data.Digits().batch(5, split="valid")
