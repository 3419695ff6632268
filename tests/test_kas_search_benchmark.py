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


def test_search_trains_the_whole_backbone_and_the_reference_families_with_one_recipe(load_script, cifar10_file,
                                                                                     tmp_path, capsys):
    bench = load_script("benchmarks/kas_search.py")
    result = bench.main(["search", "--task", "backbone", "--backbone", "resnet18", "--data", str(cifar10_file),
                         "--trials", "1", "--epochs", "1", "--train-size", "80", "--eval-size", "32", "--batch", "16",
                         "--first-loss", "10", "--proxy-ratio", "0", "--reference", "depthwise_separable",
                         "--export", str(tmp_path), "--workers", "2"])     # candidates in worker processes
    assert "the whole resnet18" in result["task"] and result["trials"] == 1
    reference = result["references"]["depthwise_separable"]
    assert 0 <= reference["accuracy"] <= 1 and 0 < reference["flops_ratio"] <= 0.25
    assert "reference depthwise_separable: accuracy" in capsys.readouterr().out
    if result["trained"]:
        assert sn.load(tmp_path / "kernel_resnet18.json") is not None      # JSON only


def test_search_swaps_the_algorithm_and_starts_from_a_hand_written_kernel(load_script, cifar10_file, tmp_path):
    bench = load_script("benchmarks/kas_search.py")
    common = ["search", "--task", "backbone", "--backbone", "resnet18", "--data", str(cifar10_file), "--epochs", "1",
              "--train-size", "80", "--eval-size", "32", "--batch", "16", "--first-loss", "10", "--proxy-ratio", "0"]
    with pytest.raises(SystemExit, match="--initial depthwise_separable is outside the search space"):
        bench.main(common + ["--initial", "depthwise_separable"])        # 4 primitives, the space starts at 5
    db = tmp_path / "kas.db"
    result = bench.main(common + ["--algorithm", "kernel-evolution", "--population", "2", "--initial", "depthwise_separable",
                                  "bottleneck_separable", "--min-primitives", "3", "--trials", "6", "--storage", str(db)])
    assert result["algorithm"] == "kernel-evolution" and result["trials"] == 6
    records = sn.Study.load(str(db)).records
    assert records[0].status == "completed" and records[0].to_object().decode().names() == \
        sn.kas.depthwise_separable().names()
    # the children mutate the two families; a mutation that leaves the kernel as it was is not trained again
    trained = [r.to_object().decode().hash for r in records if r.status == "completed"]
    assert len(trained) == len(set(trained)) >= 2
    assert all(r.error for r in records if r.status == "rejected")          # each with its reason


def test_mutations_counts_the_new_kernels_each_evolution_breeds_from_the_families(load_script, capsys):
    bench = load_script("benchmarks/kas_search.py")
    result = bench.main(["mutations", "--backbone", "resnet18", "--min-primitives", "3", "--children", "40"])
    counts = result["algorithms"]
    assert set(counts) == {"evolution", "kernel-evolution"}
    assert all(0 <= c["new"] <= c["valid"] <= 40 for c in counts.values())
    assert counts["kernel-evolution"]["new"] > counts["evolution"]["new"]
    assert "distinct new kernels" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["resnet34_kas_bottleneck", "resnet34_kas_dws_pte", "resnext29_kas_bottleneck",
                                  "resnext29_kas_bottleneck_0197", "resnet34_kas_depthwise_separable",
                                  "resnext29_kas_bottleneck_pte"])
def test_shipped_kernel_networks_load_safely_and_run_with_a_fraction_of_the_weights(name):
    import torch
    net = sn.load(os.path.join(os.path.dirname(__file__), "..", "benchmarks", "networks", f"{name}.json"))
    torch.manual_seed(0)
    model = net.build((3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert sn.nn.count_params(model) < 3.0e6        # a fraction of the originals' 21.3M / 9.1M
