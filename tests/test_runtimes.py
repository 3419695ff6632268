"""The baseline runtimes (sn.nn.runtimes): each computes what torch computes; a missing or failing one is
reported by name, never dropped."""
import sys
import time

import pytest
import torch

import symnas as sn


def _small_net():
    return sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.Conv(8, 3, stride=2),
                             sn.nn.GlobalPool(), sn.nn.Dense(10)])


def _model_and_input():
    torch.manual_seed(0)
    return _small_net().build((3, 32, 32)).eval(), torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("runtime", [sn.nn.TorchEager(), sn.nn.TorchScriptOptimized(), sn.nn.ONNXRuntime(),
                                     sn.nn.OpenVINO(), sn.nn.TVMRelax(), sn.nn.Symnas(tune=False)],
                         ids=lambda r: r.label)
def test_runtime_computes_what_torch_computes(runtime):
    if runtime.missing():
        pytest.skip(runtime.missing())
    model, x = _model_and_input()
    fn = runtime.prepare(model, x, _small_net())
    with torch.no_grad():
        torch.testing.assert_close(fn(x), model(x), atol=1e-4, rtol=1e-4)
        x2 = torch.randn(1, 3, 32, 32)           # a second input: nothing is cached from the first
        torch.testing.assert_close(fn(x2), model(x2), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_torch_compile_with_frozen_weights_computes_what_torch_computes():
    model, x = _model_and_input()
    fn = sn.nn.TorchCompile().prepare(model, x)
    with torch.no_grad():
        torch.testing.assert_close(fn(x), model(x), atol=1e-4, rtol=1e-4)


def test_missing_runtime_is_reported_by_name_not_dropped(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)        # import openvino raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager(), sn.nn.OpenVINO(),
                                                              sn.nn.ONNXRuntime()], rounds=1, min_repeat_ms=1)
    assert set(result.missing) == {"OpenVINO", "ONNX Runtime"}
    assert "openvino is not installed" in result.missing["OpenVINO"]
    assert "[baselines]" in result.missing["ONNX Runtime"]
    assert list(result.ms["small"]) == ["torch eager"]
    table = result.format()
    assert "missing: OpenVINO: openvino is not installed" in table and "missing: ONNX Runtime" in table


def test_tuned_relax_without_xgboost_is_missing_and_refuses_to_prepare(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)
    relax = sn.nn.TVMRelax(trials_per_task=2)
    assert "xgboost is not installed" in relax.missing()
    assert sn.nn.TVMRelax().missing() is None              # untuned needs no cost model
    model, x = _model_and_input()
    with pytest.raises(ImportError, match="needs xgboost"):
        relax.prepare(model, x)


class _Broken(sn.nn.Runtime):
    def prepare(self, model, x, net=None):
        raise RuntimeError("cannot lower Gather")


class _Wrong(sn.nn.Runtime):
    def prepare(self, model, x, net=None):
        return lambda inp: model(inp) + 1.0


def test_failing_or_wrong_runtime_is_reported_with_its_error_and_not_timed():
    result = sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager(), _Broken(), _Wrong()], rounds=1,
                                    min_repeat_ms=1)
    assert result.failed["small"]["_Broken"] == "RuntimeError: cannot lower Gather"
    assert "differs from torch eager by 1" in result.failed["small"]["_Wrong"]
    assert set(result.ms["small"]) == {"torch eager"}
    table = result.format()
    assert "failed: _Broken on small: RuntimeError: cannot lower Gather" in table
    assert table.count("failed") >= 4                 # two table cells and two lines below


def test_comparison_times_each_runtime_per_round_and_names_the_fastest():
    def slow(x):
        time.sleep(0.05)   # 50 ms more per call: more than a loaded machine's noise on a tiny net (3 ms was not)
        return fast(x)

    fast, x = _model_and_input()
    result = sn.nn.compare_runtimes({"small": (_small_net(), fast)}, [sn.nn.TorchEager()], rounds=3,
                                    prepared={"small": {"eager plus work": slow}}, min_repeat_ms=20)
    assert all(len(runs) == 3 and min(runs) > 0 for runs in result.runs["small"].values())
    assert result.best("small")[0] == "torch eager"
    assert result.ms["small"]["eager plus work"] > result.ms["small"]["torch eager"]
    assert "*" in [line for line in result.format().splitlines() if line.strip().startswith("torch eager")][0]


def test_bad_comparison_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager()], rounds=0)
    with pytest.raises(ValueError, match="share a label"):
        sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager(), sn.nn.TorchEager()])
    with pytest.raises(KeyError, match="not compared"):
        sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager()], prepared={"other": {}})
    with pytest.raises(ValueError, match="reuse runtime labels"):
        sn.nn.compare_runtimes({"small": _small_net()}, [sn.nn.TorchEager()],
                               prepared={"small": {"torch eager": lambda x: x}})
    with pytest.raises(ValueError, match="trials_per_task must be >= 0"):
        sn.nn.TVMRelax(trials_per_task=-1)
