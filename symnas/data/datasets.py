"""Image classification datasets as symbolic objects; ``load()`` returns tensors in memory.

Nothing is downloaded: CIFAR-10 and MNIST come from files the user has (the shared
``cifar10_jpeg.npz`` container, the standard CIFAR-10 python batches, ``mnist.npz``);
digits ships with scikit-learn; ``Synthetic`` is generated. Loaded arrays are kept in a
per-process cache so that many trials of a search load the data once.

Example::

    import symnas as sn
    splits = sn.data.Digits().load()
    print(splits.x_train.shape, splits.num_classes)    # torch.Size([1437, 1, 8, 8]) 10
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import pickle
from typing import Dict, Optional, Tuple

import numpy as np
import pyglove as pg
import torch

__all__ = ["DataSplits", "Dataset", "Digits", "Synthetic", "MNIST", "CIFAR10", "cache_dir"]

_MEMORY_CACHE: Dict[Tuple, "DataSplits"] = {}


@dataclasses.dataclass
class DataSplits:
    """Normalised float32 images ``(N, C, H, W)`` and int64 labels, train and test."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def cache_dir() -> pathlib.Path:
    """Where decoded arrays are cached: ``$SYMNAS_CACHE`` or ``~/.cache/symnas``."""
    root = os.environ.get("SYMNAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "symnas")
    return pathlib.Path(root)


def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's statistics (NCHW float32)."""
    x_train = torch.from_numpy(np.ascontiguousarray(x_train)).float()
    x_test = torch.from_numpy(np.ascontiguousarray(x_test)).float()
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64))


class Dataset(pg.Object):
    """Base: subclasses implement ``_load()``; ``load()`` caches the result per process."""

    def load(self) -> DataSplits:
        if not pg.is_deterministic(self):
            raise ValueError(f"{type(self).__name__} holds search points; sample it first.")
        key = (type(self).__name__, self.to_json_str())
        if key not in _MEMORY_CACHE:
            _MEMORY_CACHE[key] = self._load()
        return _MEMORY_CACHE[key]

    def batch(self, size: int, seed: int = 0, split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
        """``size`` examples drawn without replacement from ``split`` ("train" or "test") by ``seed``:
        the images and their labels, the same for the same arguments.

        Example::

            x, y = sn.data.Digits().batch(32, seed=0)     # a minibatch for a zero-cost proxy
        """
        if split not in ("train", "test"):
            raise ValueError(f"{type(self).__name__}.batch: split must be 'train' or 'test', got {split!r}.")
        splits = self.load()
        x, y = (splits.x_train, splits.y_train) if split == "train" else (splits.x_test, splits.y_test)
        if not 0 < size <= len(y):
            raise ValueError(f"{type(self).__name__}.batch: size must be in 1..{len(y)} (the {split} "
                             f"examples), got {size}.")
        index = torch.from_numpy(np.random.default_rng(seed).choice(len(y), size, replace=False))
        return x[index], y[index]

    def _load(self) -> DataSplits:
        raise NotImplementedError


class Digits(Dataset):
    """scikit-learn's 8x8 hand-written digits (1,797 images, 10 classes): the quick-start set.

    A stratified split keeps ``test_fraction`` of the images for testing.
    """
    test_fraction: float = 0.2
    seed: int = 0

    def _load(self) -> DataSplits:
        from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
        from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"Digits: test_fraction must be in (0, 1), got {self.test_fraction}.")
        digits = load_digits()
        x = digits.images.astype(np.float32)[:, None, :, :]
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, digits.target, test_size=self.test_fraction, random_state=self.seed,
            stratify=digits.target)
        x_tr, x_te = _normalise(x_tr, x_te)
        return DataSplits(x_tr, _labels(y_tr), x_te, _labels(y_te), 10)


class Synthetic(Dataset):
    """Gaussian blobs shaped like images: class ``k`` has its own random mean image.

    ``separation`` scales the distance between class means (larger: easier).
    """
    num_classes: int = 10
    image_shape: Tuple[int, int, int] = (3, 8, 8)
    train_size: int = 512
    test_size: int = 256
    separation: float = 1.0
    seed: int = 0

    def _load(self) -> DataSplits:
        if self.num_classes < 2 or self.train_size <= 0 or self.test_size <= 0:
            raise ValueError("Synthetic: needs num_classes >= 2 and positive train/test sizes.")
        rng = np.random.default_rng(self.seed)
        shape = tuple(self.image_shape)
        means = rng.normal(size=(self.num_classes,) + shape).astype(np.float32) * self.separation

        def draw(n):
            y = rng.integers(0, self.num_classes, size=n)
            x = means[y] + rng.normal(size=(n,) + shape).astype(np.float32)
            return x, y

        x_tr, y_tr = draw(self.train_size)
        x_te, y_te = draw(self.test_size)
        x_tr, x_te = _normalise(x_tr, x_te)
        return DataSplits(x_tr, _labels(y_tr), x_te, _labels(y_te), self.num_classes)


def _resolve(root: Optional[str], names: Tuple[str, ...], dataset: str) -> pathlib.Path:
    """Finds the first existing candidate under ``root`` (or ``$SYMNAS_DATA``)."""
    if root is None:
        root = os.environ.get("SYMNAS_DATA")
        if root is None:
            raise FileNotFoundError(
                f"{dataset}: no root given and SYMNAS_DATA is not set; pass root='path/to/data'.")
    base = pathlib.Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"{dataset}: data root {str(base)!r} does not exist.")
    candidates = [base] if base.is_file() else [base / n for n in names]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{dataset}: none of {[str(c) for c in candidates]} exists under root {str(base)!r}.")


class MNIST(Dataset):
    """MNIST from ``mnist.npz`` (keys x_train, y_train, x_test, y_test).

    ``root`` is the file itself or a folder holding ``mnist.npz`` or ``mnist/mnist.npz``;
    ``None`` means ``$SYMNAS_DATA``.
    """
    root: Optional[str] = None

    def _load(self) -> DataSplits:
        path = _resolve(self.root, ("mnist.npz", "mnist/mnist.npz"), "MNIST")
        with np.load(path) as data:
            x_tr, y_tr = data["x_train"][:, None], data["y_train"]
            x_te, y_te = data["x_test"][:, None], data["y_test"]
        x_tr, x_te = _normalise(x_tr.astype(np.float32), x_te.astype(np.float32))
        return DataSplits(x_tr, _labels(y_tr), x_te, _labels(y_te), 10)


def _decode_jpegs(raw: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    data = raw.tobytes()
    return np.stack([np.asarray(Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])).convert("RGB"))
                     for i in range(len(offsets) - 1)])


def _decoded_path(path: pathlib.Path) -> pathlib.Path:
    stat = path.stat()
    tag = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / f"cifar10_decoded_{tag}.npz"


def _cifar_from_container(path: pathlib.Path) -> Tuple[np.ndarray, ...]:
    """Decodes the JPEG container once and caches the uint8 arrays as .npy files."""
    cached = _decoded_path(path)
    if cached.exists():
        with np.load(cached) as d:
            return d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    with np.load(path) as d:
        x_tr = _decode_jpegs(d["train_jpeg"], d["train_offsets"])
        x_te = _decode_jpegs(d["test_jpeg"], d["test_offsets"])
        y_tr, y_te = d["y_train"], d["y_test"]
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        os.replace(tmp, cached)
    except OSError:
        pass  # A read-only cache only costs a re-decode next time.
    return x_tr, y_tr, x_te, y_te


def _cifar_from_batches(folder: pathlib.Path) -> Tuple[np.ndarray, ...]:
    def read(name):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(batch[b"labels"], dtype=np.uint8)

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = read("test_batch")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_te, y_te)


class CIFAR10(Dataset):
    """CIFAR-10 (32x32 RGB, 10 classes) from local files; nothing is downloaded.

    ``root`` may be the ``cifar10_jpeg.npz`` container, a folder holding it (or
    ``cifar10/cifar10_jpeg.npz``), or the standard python batches folder
    (``cifar-10-batches-py`` with data_batch_1..5 and test_batch); ``None`` means
    ``$SYMNAS_DATA``. The container is decoded with Pillow once and cached under
    ``sn.data.cache_dir()``.

    Images are standardised per channel by ``mean`` and ``std`` (in pixel units, 0-255): the
    published CIFAR-10 training-set statistics by default, so every run, search and trainer
    sees the same numbers; ``None`` computes them from the training split instead.

    Example::

        splits = sn.data.CIFAR10(root="data/cifar10/cifar10_jpeg.npz").load()
        x, y = sn.data.CIFAR10().batch(128, seed=0)      # 128 training images, from $SYMNAS_DATA
    """
    root: Optional[str] = None
    mean: Optional[Tuple[float, float, float]] = (125.3, 123.0, 113.9)
    std: Optional[Tuple[float, float, float]] = (63.0, 62.1, 66.7)

    def _path(self) -> pathlib.Path:
        return _resolve(self.root, ("cifar10_jpeg.npz", "cifar10/cifar10_jpeg.npz",
                                    "data_batch_1", "cifar-10-batches-py/data_batch_1"), "CIFAR10")

    def batch(self, size: int, seed: int = 0, split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
        # a few images need not standardise all 60,000 (nor decode them, when they were never decoded)
        path = self._path()
        loaded = (type(self).__name__, self.to_json_str()) in _MEMORY_CACHE
        if loaded or path.suffix != ".npz" or self.mean is None or split not in ("train", "test"):
            return super().batch(size, seed, split)
        decoded = _decoded_path(path)
        if decoded.exists():
            with np.load(decoded) as d:
                images, labels = d[f"x_{split}"], d[f"y_{split}"]
        else:
            with np.load(path) as d:
                labels, raw, offsets = d[f"y_{split}"], d[f"{split}_jpeg"], d[f"{split}_offsets"]
                images = None
        if not 0 < size <= len(labels):
            return super().batch(size, seed, split)     # the same error as the general case
        index = np.random.default_rng(seed).choice(len(labels), size, replace=False)
        if images is None:
            data = raw.tobytes()
            images = np.stack([_decode_jpegs(np.frombuffer(data[offsets[i]:offsets[i + 1]], np.uint8),
                                             np.array([0, offsets[i + 1] - offsets[i]]))[0] for i in index])
        else:
            images = images[index]
        return _standardise(images, self.mean, self.std), _labels(labels[index])

    def _load(self) -> DataSplits:
        path = self._path()
        if path.suffix == ".npz":
            x_tr, y_tr, x_te, y_te = _cifar_from_container(path)
        else:
            folder = path.parent if path.is_file() else path
            missing = [n for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
                       if not (folder / n).exists()]
            if missing:
                raise FileNotFoundError(f"CIFAR10: {str(folder)!r} lacks the python batches {missing}.")
            x_tr, y_tr, x_te, y_te = _cifar_from_batches(folder)
        if (self.mean is None) != (self.std is None):
            raise ValueError("CIFAR10: give both mean and std, or neither (None: the training split's).")
        if self.mean is None:
            x_tr, x_te = _normalise(x_tr.transpose(0, 3, 1, 2), x_te.transpose(0, 3, 1, 2))
        else:
            x_tr, x_te = (_standardise(x, self.mean, self.std) for x in (x_tr, x_te))
        return DataSplits(x_tr, _labels(y_tr), x_te, _labels(y_te), 10)


def _standardise(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW ``(x / 255 - mean / 255) / (std / 255)``, computed in place in
    float32 (the same numbers, bit for bit, as standardising any subset of them)."""
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ValueError(f"CIFAR10: mean and std take three values each (std > 0), got {mean} and {std}.")
    x = images.astype(np.float32)
    x /= 255
    x -= np.array(mean, dtype=np.float32) / 255
    x /= np.array(std, dtype=np.float32) / 255
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
