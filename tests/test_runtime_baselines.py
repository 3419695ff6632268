"""The runtime baselines script: every runtime on both networks of a pair, the speedup over the best original."""
import pyglove as pg
import pytest

import symnas as sn

SCRIPT = "benchmarks/runtime_baselines.py"


def _pair(tmp_path, preactivation=False):
    original = sn.nn.Sequential([sn.nn.Conv(16, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(16, 3),
                                 sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(), sn.nn.Dense(10)])
    searched = sn.nn.Sequential([sn.nn.Conv(16, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(16, 3, groups=4),
                                 sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(), sn.nn.Dense(10)])
    if preactivation:
        original = sn.nn.densenet(blocks=(2,), growth=8, num_classes=10)
    paths = [tmp_path / "orig.json", tmp_path / "searched.json"]
    for path, net in zip(paths, (original, searched)):
        path.write_text(pg.to_json_str(net))
    return [str(p) for p in paths]


@pytest.fixture
def cheap_runtimes(monkeypatch):
    """Leaves torch.compile (a minute of compiling on 2 cores) out of the script's runtimes."""
    monkeypatch.setattr(sn.nn, "default_runtimes", lambda relax=False: [
        sn.nn.TorchEager(), sn.nn.ONNXRuntime(), sn.nn.OpenVINO(), sn.nn.Symnas()])


def test_script_times_every_runtime_on_both_networks_and_writes_json(tmp_path, load_script, cheap_runtimes, capsys):
    out = tmp_path / "result.json"
    result = load_script(SCRIPT).main(["--pair", *_pair(tmp_path), "--rounds", "1", "--modules",
                                       "--relax-trials", "0", "--json", str(out)])
    expected = {"torch eager", "ONNX Runtime", "OpenVINO", "TVM Relax", "symnas", "symnas, through the modules"}
    expected -= set(result["missing"])
    assert set(result["ms"]["orig"]) == set(result["ms"]["searched"]) == expected
    assert all(0 < ms < 1000 for by in result["ms"].values() for ms in by.values())
    pair, = result["pairs"]
    assert pair["best_original_ms"] == min(result["ms"]["orig"].values())
    assert pair["speedup"] == pytest.approx(pair["best_original_ms"] / result["ms"]["searched"]["symnas"])
    split = result["symnas_split_ms"]["searched"]        # the flat plan: its 2 TVM kernels and the torch rest
    assert 0 < split["kernels"] < split["total"] < 1000
    assert out.exists()
    printed = capsys.readouterr().out
    assert "best original:" in printed and "target >= 3x" in printed


def test_script_times_a_pre_activation_network_with_and_without_the_fused_prologue(tmp_path, load_script,
                                                                                      cheap_runtimes):
    result = load_script(SCRIPT).main(["--pair", *_pair(tmp_path, preactivation=True), "--rounds", "1",
                                       "--preactivation-in-torch"])
    assert "symnas, pre-activation in torch" in result["ms"]["orig"]
    assert result["max_abs_error"]["orig"]["symnas, pre-activation in torch"] < 1e-3


def test_script_lowers_a_kernel_network_to_conv_layers_before_timing_it(
        tmp_path, load_script, cheap_runtimes, capsys, small_kernel_resnet):
    paths = [tmp_path / "orig.json", tmp_path / "kernels.json"]
    for path, net in zip(paths, small_kernel_resnet(sn.kas.depthwise_separable())):
        path.write_text(pg.to_json_str(net))
    result = load_script(SCRIPT).main(["--pair", *map(str, paths), "--rounds", "1"])
    assert "kernels: 8 of 8 searched kernels lowered to conv layers" in capsys.readouterr().out
    assert result["max_abs_error"]["kernels"]["symnas"] < 1e-3     # the lowered network, compiled to TVM


@pytest.mark.parametrize("argv, message", [(["--pair", "no/such.json", "x.json"], "no such network file: no/such.json"),
                                           (["--relax-trials", "-1"], "--relax-trials must be >= 0"),
                                           (["--rounds", "0"], "--rounds must be >= 1")])
def test_bad_options_are_refused_by_name(argv, message, capsys, load_script):
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(argv)
    assert message in capsys.readouterr().err
