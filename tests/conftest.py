"""Shared fixtures: where the shared data lives (``SYMNAS_DATA``); scripts loaded by path."""
import collections
import faulthandler
import importlib.util
import os
import pathlib
import sys

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


@pytest.fixture
def small_kernel_resnet():
    """``make(kernel) -> (net, net with kernel in every conv)``: ResNet (1, 1, 1, 1) of width 8, the kernel
    sized for each conv by the budget solver at half the convs' FLOPs."""
    import symnas as sn  # pylint: disable=import-outside-toplevel

    def make(kernel):
        net = sn.nn.resnet((1, 1, 1, 1), width=8)
        targets = sn.kas.conv_targets(net)
        solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=0.5))
        return net, sn.kas.replace_convs(net, kernel, solution, targets)
    return make


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def _live_threads() -> str:
    """The threads of this process by name (``/proc/self/task/*/comm``; unnamed native ones read 'python')."""
    names = collections.Counter()
    for task in pathlib.Path("/proc/self/task").glob("*/comm"):
        try:
            names[task.read_text().strip()] += 1
        except OSError:
            pass
    return ", ".join(f"{name} x{count}" for name, count in sorted(names.items()))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Ends the test process once pytest has written its summary and saved its cache.

    On 2026-12-03 a clean-clone run passed every test and then died with a segmentation fault
    while the interpreter tore down (once in six runs), which turned a green suite's exit status
    into 139. It has not been seen since (docs/known_gaps.md lists the runs: full suite, and the
    groups of test files that start native thread pools, repeated). What is still alive at that
    point: Ray's driver keeps about 20 native threads after ``ray.shutdown()`` (its GCS client and
    worker io loops, gRPC's executors and timers), TVM and torch one or two each; of Python's, idle
    ThreadPoolExecutor workers and tqdm's monitor. Skipping the teardown keeps the status the tests
    earned.

    ``SYMNAS_TEST_FULL_EXIT=1`` runs the ordinary teardown instead, naming the live threads and
    with faulthandler on (all threads), so that a crash there prints every Python stack.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    if os.environ.get("SYMNAS_TEST_FULL_EXIT") == "1":
        sys.stderr.write(f"conftest: ordinary interpreter teardown; live threads: {_live_threads()}\n")
        faulthandler.enable(file=sys.__stderr__, all_threads=True)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
