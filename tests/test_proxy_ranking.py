"""The proxy-ranking script: every proxy's score relative to the original, and its rank agreement with accuracy."""
import json

import pyglove as pg
import pytest

import symnas as sn

SCRIPT = "benchmarks/proxy_ranking.py"


def _networks(tmp_path):
    """A small ResNet and two transformed copies (groups 2 and 8 on every transformable conv), saved as JSON."""
    net = sn.nn.resnet((1, 1, 1, 1), width=8)
    paths = []
    for groups in (1, 2, 8):
        sites = sn.nn.transformable_convs(net, (3, 32, 32))
        cand = net if groups == 1 else sn.nn.replace_convs(
            net, {s.path: sn.nn.Conv(s.out_shape[0], 3, stride=s.layer.stride, groups=groups) for s in sites})
        path = tmp_path / f"g{groups}.json"
        path.write_text(pg.to_json_str(cand))
        paths.append(str(path))
    return paths


def test_ratios_params_and_rank_correlation_of_each_proxy(cifar10_file, tmp_path, monkeypatch, load_script, capsys):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    paths = _networks(tmp_path)
    out = tmp_path / "ranking.json"
    result = load_script(SCRIPT).main(["--models", *paths, "--proxies", "fisher", "snip", "--batch", "8",
                                       "--accuracy", "90", "80", "70", "--json", str(out)])
    assert set(result["ratio"]) == {"fisher", "snip"}
    assert set(result["ratio"]["snip"]) == {"g2", "g8"}          # columns are the file stems, original left out
    assert result["params"]["g1"] > result["params"]["g2"] > result["params"]["g8"]
    # SNIP sums |w * dL/dw|: fewer weights, lower score, so it orders these three exactly like the accuracies
    assert result["ratio"]["snip"]["g8"] < result["ratio"]["snip"]["g2"] < 1
    assert result["kendall_tau"]["snip"] == pytest.approx(1.0)
    assert -1 <= result["kendall_tau"]["fisher"] <= 1
    assert result["kendall_tau"]["params"] == pytest.approx(1.0)     # the baseline: fewer weights, lower accuracy here
    assert json.loads(out.read_text())["kendall_tau"] == result["kendall_tau"]
    printed = capsys.readouterr().out
    assert "Kendall tau vs accuracy" in printed and "+1.00" in printed


def test_kendall_tau_counts_concordant_pairs(load_script):
    tau = load_script(SCRIPT).kendall_tau
    assert tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(2 / 3)


def test_same_stems_in_different_folders_get_their_folder(load_script):
    assert load_script(SCRIPT).labels(["a/net.json", "b/net.json", "b/other.json"]) == ["a/net", "b/net", "other"]


@pytest.mark.parametrize("argv, message", [
    (["--models", "a.json"], "at least one other candidate"),
    (["--models", "a.json", "b.json", "--accuracy", "90"], "--accuracy has 1 values for 2 --models"),
    (["--models", "a.json", "b.json", "--proxies", "fisherr"], "invalid choice: 'fisherr'"),
    (["--models", "a.json", "b.json", "--batch", "0"], "--batch must be >= 1"),
    (["--models", "missing.json", "b.json"], "cannot load a network from missing.json"),
])
def test_bad_input_is_refused_by_name_before_any_scoring(argv, message, capsys, load_script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(argv)
    assert message in capsys.readouterr().err
