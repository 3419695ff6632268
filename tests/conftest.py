"""Shared fixtures: where the shared data lives (``SYMNAS_DATA``); scripts loaded by path."""
import importlib.util
import os
import pathlib

import pytest


def shared_data_path(*parts: str) -> pathlib.Path:
    """Path under ``$SYMNAS_DATA``; skips the calling test with a reason when it is absent."""
    root = os.environ.get("SYMNAS_DATA")
    if not root:
        pytest.skip("SYMNAS_DATA is not set: the shared data (../shared/data) is needed for this test")
    path = pathlib.Path(root, *parts)
    if not path.exists():
        pytest.skip(f"{path} is missing (SYMNAS_DATA={root})")
    return path


@pytest.fixture
def nasbench201_table():
    return shared_data_path("nasbench201", "nb201_tss_all.csv.gz")


@pytest.fixture
def cifar10_file():
    return shared_data_path("cifar10", "cifar10_jpeg.npz")


@pytest.fixture
def mnist_file():
    return shared_data_path("mnist", "mnist.npz")


@pytest.fixture
def load_script():
    """Imports a script of ``benchmarks/`` or ``examples/`` (not packages) by its path in the repository."""
    root = pathlib.Path(__file__).resolve().parents[1]

    def load(relative_path: str):
        path = root / relative_path
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
