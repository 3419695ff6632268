"""benchmarks/paired_accuracy.py: the accuracy column's statistics, from train_cifar.py result files."""
import json

import pytest

SCRIPT = "benchmarks/paired_accuracy.py"


def _run(folder, model, seed, accuracy, epochs=10, clip_grad=0.0, losses=(1.5, 1.0, 0.8), compile=None):
    folder.mkdir(parents=True, exist_ok=True)
    results = {"recipe": {"epochs": epochs, "batch": 512, "lr": 0.2, "seed": seed, "init": "by-name",
                          "clip_grad": clip_grad, **({} if compile is None else {"compile": compile})},
               "models": {model: {"test_accuracy": accuracy / 100, "history": [{"loss": x} for x in losses]}}}
    (folder / f"{model}_s{seed}.json").write_text(json.dumps(results))


def test_pairs_seeds_within_a_job_and_pools_jobs_per_recipe(tmp_path, load_script):
    for seed, (orig, ours) in enumerate([(87.0, 86.0), (86.0, 84.0)]):
        _run(tmp_path / "a", "orig", seed, orig)
        _run(tmp_path / "a", "ours", seed, ours)
    _run(tmp_path / "b", "orig", 2, 88.0)
    _run(tmp_path / "b", "ours", 2, 85.0)
    _run(tmp_path / "b", "ours", 3, 80.0)                       # no original of seed 3: not a pair
    _run(tmp_path / "b", "orig", 0, 90.0, epochs=30)            # another recipe: its own table
    _run(tmp_path / "b", "ours", 0, 89.5, epochs=30)
    summaries = load_script(SCRIPT).pair([str(tmp_path / "a"), str(tmp_path / "b")], "orig", "ours")
    ten, thirty = sorted(summaries, key=lambda s: s["recipe"]["epochs"])
    assert [p["difference"] for p in ten["pairs"]] == pytest.approx([-1.0, -2.0, -3.0])
    low, high = ten["interval_95"]                               # mean -2, sd 1, t(0.975, 2 df) = 4.3027
    assert ten["mean_difference"] == pytest.approx(-2.0)
    assert (low, high) == pytest.approx((-2.0 - 4.3027 / 3 ** 0.5, -2.0 + 4.3027 / 3 ** 0.5), abs=1e-3)
    assert thirty["mean_difference"] == pytest.approx(-0.5) and thirty["interval_95"] is None


def test_compiled_runs_pair_only_with_compiled_runs_and_old_files_count_as_eager(tmp_path, load_script):
    _run(tmp_path / "a", "orig", 0, 90.0, compile=True)
    _run(tmp_path / "a", "ours", 0, 89.0, compile=True)
    _run(tmp_path / "b", "orig", 1, 88.0)                       # written before the key existed: eager
    _run(tmp_path / "b", "ours", 1, 85.0, compile=False)
    _run(tmp_path / "b", "ours", 2, 80.0, compile=True)         # its original ran eager: not a pair
    _run(tmp_path / "b", "orig", 2, 87.0, compile=False)
    summaries = load_script(SCRIPT).pair([str(tmp_path / "a"), str(tmp_path / "b")], "orig", "ours")
    by_compile = {s["recipe"]["compile"]: [p["difference"] for p in s["pairs"]] for s in summaries}
    assert by_compile == {True: pytest.approx([-1.0]), False: pytest.approx([-3.0])}


def test_diverged_runs_are_marked_and_can_be_left_out(tmp_path, load_script):
    _run(tmp_path / "a", "orig", 0, 80.0, losses=(1.6, 0.7, 0.53, 2.26))     # a jump back towards chance
    _run(tmp_path / "a", "ours", 0, 85.0)
    _run(tmp_path / "a", "orig", 1, 87.0)
    _run(tmp_path / "a", "ours", 1, 86.0)
    script = load_script(SCRIPT)
    kept = script.pair([str(tmp_path / "a")], "orig", "ours")[0]
    assert [p["diverged"] for p in kept["pairs"]] == [["orig"], []]
    left_out = script.pair([str(tmp_path / "a")], "orig", "ours", exclude_diverged=True)[0]
    assert [p["seed"] for p in left_out["pairs"]] == [1] and left_out["mean_difference"] == pytest.approx(-1.0)
    assert [p["seed"] for p in left_out["excluded"]] == [0]


def test_bad_input_is_refused_by_name(tmp_path, capsys, load_script):
    script = load_script(SCRIPT)
    _run(tmp_path / "a", "orig", 0, 87.0)
    _run(tmp_path / "a" / "again", "orig", 0, 86.0)
    _run(tmp_path / "a", "ours", 0, 86.0)
    with pytest.raises(ValueError, match="orig seed 0 appears twice with one recipe"):
        script.pair([str(tmp_path / "a")], "orig", "ours")
    with pytest.raises(ValueError, match="no seed has both 'orig' and 'theirs'"):
        script.pair([str(tmp_path / "a" / "again")], "orig", "theirs")
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "other.json"), "--original", "orig", "--ours", "ours"])
    assert "is not a train_cifar.py results file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "missing"), "--original", "orig", "--ours", "ours"])
    assert "is neither a results file nor a folder" in capsys.readouterr().err


def test_prints_the_table_and_writes_json(tmp_path, capsys, load_script):
    _run(tmp_path / "a", "orig", 0, 87.0)
    _run(tmp_path / "a", "ours", 0, 86.5)
    out = tmp_path / "summary.json"
    load_script(SCRIPT).main([str(tmp_path / "a"), "--original", "orig", "--ours", "ours", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "1 pairs: ours 86.50 vs original 87.00, mean difference -0.50" in printed
    assert json.loads(out.read_text())[0]["pairs"][0]["difference"] == pytest.approx(-0.5)
