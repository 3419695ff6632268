"""The whole-network Relax baseline script: Relax-compiled networks compute what torch computes."""
import sys

import pyglove as pg
import pytest
import torch

import symnas as sn

SCRIPT = "benchmarks/relax_baseline.py"


def _small_net():
    return sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(8, 3, stride=2),
                             sn.nn.GlobalPool(), sn.nn.Dense(10)])


def test_untuned_relax_network_matches_torch(load_script):
    torch.manual_seed(0)
    model = _small_net().build((3, 32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    relax_net = load_script(SCRIPT).RelaxNetwork.compile(model, trials_per_task=0)
    assert relax_net.trials == 0 and relax_net.tasks == 0
    with torch.no_grad():
        torch.testing.assert_close(relax_net(x), model(x), atol=1e-4, rtol=1e-4)


def test_script_times_every_way_of_running_each_model_and_writes_json(tmp_path, load_script):
    path = tmp_path / "small.json"
    pg.save(_small_net(), str(path))
    out = tmp_path / "result.json"
    result = load_script(SCRIPT).main(["--models", str(path), "--trials-per-task", "0", "--rounds", "1",
                                 "--json", str(out)])
    assert set(result["ms"]) == {"small | torch eager", "small | symnas TVM", "small | symnas TVM, through the modules",
                                 "small | Relax untuned"}
    assert all(0 < ms < 1000 for ms in result["ms"].values())
    errors = {k: v for k, v in result["models"]["small"].items() if k.startswith("max_abs_error")}
    assert len(errors) == 4 and all(e < 1e-3 for e in errors.values())
    small = result["models"]["small"]       # the flat plan split into its 2 TVM kernels and the torch rest
    assert small["kernels_in_network_ms"] > 0 and small["outside_kernels_ms"] > 0
    assert small["kernels_in_network_ms"] + small["outside_kernels_ms"] < 1000
    assert out.exists()


def test_script_times_a_pre_activation_network_with_and_without_the_fused_prologue(tmp_path, load_script):
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(8, 3, stride=2),
                            sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(), sn.nn.Dense(10)])
    path = tmp_path / "preact.json"
    pg.save(net, str(path))
    result = load_script(SCRIPT).main(["--models", str(path), "--trials-per-task", "0", "--tune-models", "0",
                                       "--rounds", "1", "--preactivation-in-torch"])
    info = result["models"]["preact"]
    # post-activation: each batch norm + ReLU is folded into the conv before it, none is a prologue
    assert info["prologues_fused"] == 0 and "preact | symnas TVM, pre-activation in torch" not in result["ms"]
    dense = sn.nn.densenet(blocks=(2,), growth=8, num_classes=10)
    pg.save(dense, str(path))
    result = load_script(SCRIPT).main(["--models", str(path), "--trials-per-task", "0", "--tune-models", "0",
                                       "--rounds", "1", "--preactivation-in-torch"])
    info = result["models"]["preact"]
    assert info["prologues_fused"] == 2                 # the 1x1 conv of each of the 2 dense layers
    assert "preact | symnas TVM, pre-activation in torch" in result["ms"]
    assert info["max_abs_error symnas TVM, pre-activation in torch"] < 1e-3


def test_tuning_without_xgboost_is_refused_by_name(monkeypatch, load_script):
    monkeypatch.setitem(sys.modules, "xgboost", None)        # import xgboost raises ImportError
    model = _small_net().build((3, 32, 32)).eval()
    with pytest.raises(ImportError, match="needs xgboost"):
        load_script(SCRIPT).RelaxNetwork.compile(model, trials_per_task=2)


@pytest.mark.parametrize("argv, message", [(["--models", "no/such.json"], "no such model file: no/such.json"),
                                           (["--models", "x", "--trials-per-task", "-1"],
                                            "--trials-per-task must be >= 0"),
                                           (["--models", "x", "--rounds", "0"], "--rounds must be >= 1"),
                                           (["--models", "x", "--tune-models", "-1"], "--tune-models must be >= 0")])
def test_bad_options_are_refused_by_name(argv, message, capsys, load_script):
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(argv)
    assert message in capsys.readouterr().err
