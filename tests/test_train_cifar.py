"""The CIFAR-10 training script (sn.train.Trainer with the GPU recipe), as CPU smoke runs."""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pyglove as pg
import pytest
import torch

import symnas as sn

SCRIPT = "benchmarks/train_cifar.py"
ROOT = pathlib.Path(__file__).resolve().parents[1]
PARALLEL = str(ROOT / "benchmarks" / "train_cifar_parallel.sh")
SMOKE = ["--epochs", "2", "--batch", "16", "--limit", "64"]


def _saved_net(tmp_path, name="tiny", width=8):
    net = sn.nn.Sequential([sn.nn.Conv(width, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(),
                            sn.nn.Dense(10)])
    path = tmp_path / f"{name}.json"
    path.write_text(pg.to_json_str(net))
    return path


def test_trains_each_model_with_one_recipe_and_writes_the_results(cifar10_file, tmp_path, load_script):
    out = tmp_path / "out"
    results = load_script(SCRIPT).main(["--models", str(_saved_net(tmp_path)), "--data", str(cifar10_file), *SMOKE,
                                        "--seed", "3", "--out", str(out)])
    run = results["models"]["tiny"]
    assert 0.0 <= run["test_accuracy"] <= 1.0 and run["epochs_run"] == 2
    assert run["diverged_at_epoch"] is None
    assert run["params"] == 8 * 3 * 9 + 2 * 8 + 8 * 10 + 10     # conv (no bias), batch norm, dense
    assert results["recipe"] == {"epochs": 2, "batch": 16, "lr": 0.2, "seed": 3, "init": "by-name",
                                 "clip_grad": 0, "compile": False}
    assert [e["epoch"] for e in run["history"]] == [1, 2] and "accuracy" in run["history"][-1]
    assert json.loads((out / "train_cifar.json").read_text())["models"]["tiny"]["epochs_run"] == 2


def test_two_models_on_several_seeds_are_paired_and_written_per_seed(cifar10_file, tmp_path, capsys, load_script):
    a, b = _saved_net(tmp_path, "a"), _saved_net(tmp_path, "b", width=4)
    out = tmp_path / "job"
    results = load_script(SCRIPT).main(["--models", str(a), str(b), "--data", str(cifar10_file), *SMOKE,
                                        "--seeds", "0", "1", "--workers", "2", "--out", str(out)])
    assert sorted(results) == [0, 1] and set(results[1]["models"]) == {"a", "b"}
    assert "mean difference" in capsys.readouterr().out
    paired = load_script("benchmarks/paired_accuracy.py").pair([str(out)], "a", "b")
    assert [p["seed"] for p in paired[0]["pairs"]] == [0, 1]
    summary = json.loads((out / "paired.json").read_text())          # the comparison in one file
    assert (summary["reference"], summary["other"]) == ("a", "b") and sorted(summary["seeds"]) == ["0", "1"]
    expected = [round(100 * (results[s]["models"]["b"]["test_accuracy"] - results[s]["models"]["a"]["test_accuracy"]), 2)
                for s in (0, 1)]
    assert summary["differences"] == pytest.approx(expected, abs=0.011) and len(summary["interval95"]) == 2
    assert summary["recipe"]["epochs"] == 2 and "seed" not in summary["recipe"]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++") or os.environ.get("CXX")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compile_trains_the_same_steps_as_eager_and_is_recorded(cifar10_file, tmp_path, load_script, monkeypatch):
    compiled_modules, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled_modules.append(m) or real_compile(m, **kw))
    args = ["--models", str(_saved_net(tmp_path)), "--data", str(cifar10_file), *SMOKE, "--seed", "3"]
    eager = load_script(SCRIPT).main(args + ["--out", str(tmp_path / "eager")])
    compiled = load_script(SCRIPT).main(args + ["--compile", "--out", str(tmp_path / "compiled")])
    assert compiled["recipe"]["compile"] is True and eager["recipe"]["compile"] is False
    assert len(compiled_modules) == 1      # the eager run compiled nothing, the --compile run its one model
    losses = lambda r: [e["train_loss"] for e in r["models"]["tiny"]["history"]]  # noqa: E731
    # the same data, weights and steps: only the kernels' rounding differs
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4)
    assert compiled["models"]["tiny"]["test_accuracy"] == pytest.approx(eager["models"]["tiny"]["test_accuracy"],
                                                                         abs=2 / 64)


def test_by_name_init_gives_the_same_weights_to_the_same_layer_in_two_networks(tmp_path, load_script):
    script = load_script(SCRIPT)
    args = argparse.Namespace(data=None, epochs=1, batch=16, lr=0.1, clip_grad=0, compile=False, init="by-name",
                              limit=None)
    net = script.load_network(str(_saved_net(tmp_path, "a")))
    first = lambda t: next(t._build((3, 32, 32), 10, torch.device("cpu")).parameters())  # noqa: E731
    a, b = script.recipe(args, net, 5), script.recipe(args, script.load_network(str(_saved_net(tmp_path, "b"))), 5)
    assert torch.equal(first(a), first(b)) and not torch.equal(first(a), first(script.recipe(args, net, 6)))


def test_data_and_models_are_found_or_refused_by_name(tmp_path, monkeypatch, capsys, load_script):
    path = str(_saved_net(tmp_path))
    monkeypatch.delenv("SYMNAS_DATA", raising=False)
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--models", path])
    assert "give --data path/to/cifar10_jpeg.npz or set SYMNAS_DATA" in capsys.readouterr().err
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--models", path])
    assert f"--data: {tmp_path}/cifar10/cifar10_jpeg.npz does not exist" in capsys.readouterr().err
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg.npz").touch()
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--models", str(tmp_path / "none.json")])
    assert "none.json not found" in capsys.readouterr().err


def test_a_schedule_too_short_for_one_cycle_is_refused(cifar10_file, tmp_path, load_script):
    with pytest.raises(ValueError, match="needs more than 4 steps, got 4"):
        load_script(SCRIPT).main(["--models", str(_saved_net(tmp_path)), "--data", str(cifar10_file),
                                  "--epochs", "1", "--batch", "16", "--limit", "64", "--out", str(tmp_path)])


def test_clipping_counts_the_clipped_steps_and_is_recorded(cifar10_file, tmp_path, capsys, load_script):
    script = load_script(SCRIPT)
    args = ["--models", str(_saved_net(tmp_path)), "--data", str(cifar10_file), *SMOKE, "--out", str(tmp_path)]
    results = script.main(args + ["--clip-grad", "1e-6"])
    assert [e["clipped_steps"] for e in results["models"]["tiny"]["history"]] == [4, 4]   # every step
    assert results["recipe"]["clip_grad"] == 1e-6
    with pytest.raises(SystemExit):
        script.main(args + ["--clip-grad", "-1"])
    assert "--clip-grad must be >= 0" in capsys.readouterr().err


def test_a_run_that_diverges_is_reported_with_a_hint(cifar10_file, tmp_path, capsys, load_script):
    results = load_script(SCRIPT).main(["--models", str(_saved_net(tmp_path)), "--data", str(cifar10_file),
                                        "--epochs", "4", "--batch", "16", "--limit", "64", "--lr", "1e4",
                                        "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert results["models"]["tiny"]["diverged_at_epoch"] is not None
    assert "this run diverged (try clip_grad_norm=2" in out and "diverged at epoch" in out


def test_the_parallel_script_trains_every_seed_model_pair_in_its_own_process(cifar10_file, tmp_path):
    a, b = _saved_net(tmp_path, "a"), _saved_net(tmp_path, "b")
    out = tmp_path / "out"
    env = {**os.environ, "DATA": str(cifar10_file), "OUT": str(out), "EXTRA": "--limit 64 --batch 16",
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", PARALLEL, "2", "by-name", f"0:{a}", f"1:{b}"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "a_s0: a: test accuracy" in done.stdout and "b_s1: b: test accuracy" in done.stdout
    assert json.loads((out / "b_s1" / "train_cifar.json").read_text())["recipe"]["seed"] == 1


def test_the_parallel_script_starts_a_run_only_while_fewer_than_at_once_are_running(cifar10_file, tmp_path):
    # an interpreter wrapper that logs when each run starts and ends
    trace, wrapper = tmp_path / "trace", tmp_path / "python"
    wrapper.write_text(f'#!/bin/bash\necho start >> {trace}\n"{sys.executable}" "$@"\nrc=$?\n'
                       f'echo end >> {trace}\nexit $rc\n')
    wrapper.chmod(0o755)
    runs = [f"{seed}:{_saved_net(tmp_path, name)}" for seed, name in ((0, "a"), (1, "b"), (2, "c"))]
    env = {**os.environ, "DATA": str(cifar10_file), "OUT": str(tmp_path / "out"), "PYTHON": str(wrapper),
           "EXTRA": "--limit 64 --batch 16", "AT_ONCE": "1"}
    done = subprocess.run(["bash", PARALLEL, "2", "by-name", *runs], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert trace.read_text().split() == ["start", "end"] * 3          # one after the other
    assert all(f"{n}_s{s}: {n}: test accuracy" in done.stdout for s, n in ((0, "a"), (1, "b"), (2, "c")))
    done = subprocess.run(["bash", PARALLEL, "2", "by-name", *runs], env={**env, "AT_ONCE": "0"},
                          capture_output=True, text=True)
    assert done.returncode == 2 and "AT_ONCE must be a positive integer (runs at a time), got '0'" in done.stderr


def test_the_parallel_script_refuses_a_missing_model_or_data_by_name(cifar10_file, tmp_path):
    env = {**os.environ, "DATA": str(cifar10_file), "OUT": str(tmp_path)}
    done = subprocess.run(["bash", PARALLEL, "2", "by-name", f"0:{tmp_path}/none.json"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and f"bad run '0:{tmp_path}/none.json'" in done.stderr
    env = {**env, "DATA": str(tmp_path / "none.npz")}
    done = subprocess.run(["bash", PARALLEL, "2", "by-name", f"0:{_saved_net(tmp_path)}"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no CIFAR-10 file" in done.stderr


def test_gpu_env_makes_a_checkout_importable_without_installing_it(tmp_path):
    # A bare machine (the lent GPU) has no editable install: python -S skips the .pth files that make
    # one, so only gpu_env.sh's link tree can map algorithms/ and spaces/ into the package.
    site_packages = ":".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    bare_python = tmp_path / "python"
    bare_python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare_python.chmod(0o755)
    script = (f'export PYTHONPATH={site_packages}; PYTHON={bare_python} SYMNAS_SRC={tmp_path}/src '
              f'. {ROOT}/benchmarks/gpu_env.sh && cd {tmp_path} && {bare_python} -c '
              '"import symnas, symnas.algorithms, symnas.spaces; '
              'print(symnas.__file__); print(symnas.algorithms.__file__); print(symnas.algorithms.Random.__name__)"')
    # Sourced from the checkout's root, as on the GPU machine: its bare symnas/ must not shadow the link tree
    # in gpu_env's own check.
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "does not import" not in done.stderr, done.stderr
    package, algorithms, random_class = done.stdout.split()
    assert package == f"{tmp_path}/src/symnas/__init__.py"
    assert os.path.realpath(algorithms) == str(ROOT / "algorithms" / "__init__.py")
    assert random_class == "Random"
