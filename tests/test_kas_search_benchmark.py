"""benchmarks/kas_search.py on small settings: the sampler table, rediscovery, network export."""
import os

import pytest

import symnas as sn


def test_sampler_reports_valid_distinct_kernels_per_second(load_script, capsys):
    bench = load_script("benchmarks/kas_search.py")
    result = bench.main(["sampler", "--backbone", "resnet18", "--proposals", "6", "--warmup", "1", "--verify", "6",
                         "--max-primitives", "10"])
    assert result["verified_distinct"] == 6 and result["per_second_cpu"] > 0
    assert "valid, distinct, solved kernels" in capsys.readouterr().out


def test_rediscover_prints_found_families_and_encodes_the_references(load_script, capsys):
    bench = load_script("benchmarks/kas_search.py")
    result = bench.main(["rediscover", "--backbone", "resnet18", "--samples", "30", "--max-primitives", "10"])
    out = capsys.readouterr().out
    assert "the space holds the hand-written designs" in out
    for name in ("depthwise_separable", "spatially_separable", "involution_like"):
        assert f"    {name}: " in out            # each reference kernel encoded and decoded
    assert set(result["found"]) <= {"depthwise_separable", "spatially_separable", "involution_like"}


def test_networks_export_loads_safely_and_rejects_bad_arguments(load_script, tmp_path):
    bench = load_script("benchmarks/kas_search.py")
    result = bench.main(["networks", "--backbone", "resnet18", "--kernel", "depthwise_separable", "--rounds", "0",
                         "--export", str(tmp_path), "--proxy-batch", "4",
                         "--save-winner", str(tmp_path / "winner.json")])
    (name,) = result["candidates"]
    assert name.startswith("depthwise_separable@") and result["lowered"] == {name: (16, 16)}
    assert result["proxy"][name]["naswot"] != 0 and result["proxy"]["original"]["fisher"] > 0
    net = sn.load(os.path.join(tmp_path, "resnet18_kas_depthwise_separable.json"))
    assert net.build((3, 32, 32)) is not None
    assert sn.load(tmp_path / "winner.json") == net
    with pytest.raises(SystemExit):
        bench.main(["networks", "--budget", "-1"])
