"""Datasets from local files or packages (no downloads at run time), loaded as tensors."""
from symnas.data.datasets import *  # noqa: F401,F403
