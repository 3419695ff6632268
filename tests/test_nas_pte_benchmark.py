"""The NAS-as-program-transformation benchmark over sn.pte: it reproduces the shipped networks from their
shipped kernel tables, and refuses bad options by name before any work."""
import json
import math
import pathlib
import shutil

import pyglove as pg
import pytest

import symnas as sn

SCRIPT = "benchmarks/nas_pte.py"
NETWORKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "networks"
DATA = pathlib.Path(__file__).resolve().parent / "data"

# the command of docs/results.md that found benchmarks/networks/resnet34_cold33.json (~16 min on 2 cores)
RESNET34_COLD33 = ["--backbone", "resnet34", "--trials", "1000", "--mode", "network", "--channel-shuffle",
                   "--fill-budget", "--fill-by", "snip", "--exact-candidates", "40", "--target-speedup", "3.3",
                   "--fill-checks", "100"]
# a small run of the same method on ResNet-18 from its shipped (warm-timed) table, whose network the
# benchmark's earlier, stand-alone implementation found (tests/data/resnet18_small_run.json)
RESNET18_SMALL = ["--backbone", "resnet18", "--trials", "100", "--fisher-batch", "32", "--mode", "network",
                  "--channel-shuffle", "--fill-budget", "--fill-by", "weights", "--fill-checks", "10",
                  "--exact-candidates", "5", "--target-speedup", "2.5", "--kernel-timing", "warm"]

# the same, smaller: only the 8x8 and 4x4 stages searched, 60 candidates (tests/data/resnet18_stages34_run.json)
RESNET18_STAGES34 = ["--backbone", "resnet18", "--trials", "60", "--fisher-batch", "16", "--keep", "3.body.0",
                     "3.body.3", "4.body.0", "4.body.3", "5.body.0", "5.body.3", "6.body.0", "6.body.3", "--mode",
                     "network", "--channel-shuffle", "--fill-budget", "--fill-by", "weights", "--fill-checks", "6",
                     "--exact-candidates", "3", "--target-speedup", "1.3", "--kernel-timing", "warm"]


def _network(path):
    return sn.load(path)


def _search(load_script, argv, table, tmp_path):
    """The benchmark's search of its first backbone (no timing of whole networks), on a copy of ``table``."""
    copy = tmp_path / "table.json"
    shutil.copy(table, copy)
    script = load_script(SCRIPT)
    args = script.parse(argv + ["--kernel-table", str(copy)])
    return script.run(args.backbone[0], args)


def test_a_resnet18_run_on_two_stages_reproduces_the_network_of_the_earlier_implementation(
        cifar10_file, tmp_path, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    result = _search(load_script, RESNET18_STAGES34, NETWORKS / "kt_r18_warm.json", tmp_path)
    assert result.search["kernel_compiles"] == 0              # every latency from the shipped table
    assert pg.eq(result.network, _network(DATA / "resnet18_stages34_run.json"))
    assert result.legality.legal and result.legality.screened == [True] and result.legality.fill_checks == 6
    assert result.legality.fill_upgrades == [          # the earlier implementation's upgrades, in its order
        "7.body.0: split(co,2)>G4[p0]>G8[p1]>shuffle -> G2>shuffle",
        "8.body.3: split(co,2)>G2[p0]>G4[p1]>shuffle -> G2>shuffle"]
    assert [row["layer"] for row in result.layers] == [f"{b}.body.{i}" for b in (7, 8, 9, 10) for i in (0, 3)]


@pytest.mark.slow
def test_a_small_resnet18_run_reproduces_the_network_of_the_earlier_implementation(
        cifar10_file, tmp_path, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    result = _search(load_script, RESNET18_SMALL, NETWORKS / "kt_r18_warm.json", tmp_path)
    assert result.search["kernel_compiles"] == 0              # every latency from the shipped table
    assert pg.eq(result.network, _network(DATA / "resnet18_small_run.json"))
    assert result.legality.legal and result.legality.screened == [True] and result.legality.fill_checks == 10
    assert result.legality.fill_upgrades == [          # the earlier implementation's upgrades, in its order
        "9.body.3: G8>B2(ci)>shuffle -> G4>B2(ci)>shuffle", "9.body.0: split(co,2)>G2[p0]>G4[p1]>shuffle -> B2(ci)",
        "7.body.0: G16>shuffle -> G4>B2(ci)>shuffle", "8.body.0: G4>B2(ci)>shuffle -> split(co,2)>G4[p0]>G8[p1]>shuffle",
        "10.body.3: G2>B2(ci)>shuffle -> G2>shuffle"]


@pytest.mark.slow
def test_the_shipped_resnet34_network_is_found_again_from_the_shipped_kernel_table(
        cifar10_file, tmp_path, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    result = _search(load_script, RESNET34_COLD33, NETWORKS / "kt_r34_cold.json", tmp_path)
    assert result.search["kernel_compiles"] == 0
    assert pg.eq(result.network, _network(NETWORKS / "resnet34_cold33.json"))
    assert result.legality.legal and result.legality.fill_upgrades


@pytest.mark.slow
def test_network_mode_with_fill_budget_and_shuffle_reports_a_legal_network_within_the_budget(
        cifar10_file, tmp_path, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    out = tmp_path / "result.json"
    load_script(SCRIPT).main(["--quick", "--no-relax", "--mode", "network", "--fill-budget", "--fill-by", "snip",
                              "--fill-images", "16", "--target-speedup", "2", "--channel-shuffle",
                              "--exact-candidates", "3", "--rounds", "2", "--json", str(out),
                              "--export", str(tmp_path / "models")])
    result, = json.loads(out.read_text())
    assert result["options"]["mode"] == "network" and result["search"]["trials"] == 100
    legality = result["legality"]
    assert legality["legal"] and legality["exact"]["network"]["legal"]    # passes the exact check
    assert len(legality["fill_upgrades"]) <= legality["fill_checks"]
    kernels = result["kernel_ms"]
    assert kernels["ours"] < kernels["original"]
    if legality["fill_upgrades"]:                                          # upgrades never overspend the budget
        assert kernels["ours"] <= kernels["original"] / 2 + 1e-9
    assert result["params"]["ours"] < result["params"]["original"]
    assert 0 <= result["unread_channel_share"] < 1
    assert math.isfinite(result["timings_ms"]["ours"]) and result["speedup"] > 0
    assert {"original_torch", "original_jit", "nas_only", "ours_jit"} <= set(result["timings_ms"])
    # --channel-shuffle: every grouping the network uses reads shuffled channels
    grouped = [row["neural"] for row in result["layers"] if "G" in row["neural"]]
    assert grouped and all("shuffle" in n for n in grouped)
    assert all(math.isfinite(row["nas_only_ms"]) and row["nas_only_ms"] > 0 for row in result["layers"])
    assert pg.eq(_network(tmp_path / "models" / "resnet18_ours.json"), _network_of(result))


def _network_of(saved):
    return sn.from_json(json.dumps(saved["network"]))


@pytest.mark.parametrize("argv, message", [(["--target-speedup", "0"], "--target-speedup must be positive"),
                                           (["--exact-candidates", "-1"], "--exact-candidates must be >= 0"),
                                           (["--fill-images", "0"], "--fill-images must be >= 1"),
                                           (["--proxy", "snip"], "--proxy snip: the block context reuses output "
                                                                 "gradients and is defined for fisher; add --context tail"),
                                           (["--proxy", "fisher_potential"], "invalid choice: 'fisher_potential'")])
def test_bad_options_are_refused_by_name_before_any_work(argv, message, capsys, load_script):
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(argv)
    assert message in capsys.readouterr().err


def test_missing_cifar10_is_refused_before_any_kernel_is_compiled(tmp_path, monkeypatch, capsys, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--quick"])
    assert "CIFAR10: none of" in capsys.readouterr().err
    monkeypatch.delenv("SYMNAS_DATA")
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--quick"])
    assert "SYMNAS_DATA is not set" in capsys.readouterr().err


def test_keep_of_an_unknown_layer_is_refused_before_any_kernel_is_compiled(cifar10_file, monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    with pytest.raises(ValueError, match="'stem' is not a transformable layer"):
        load_script(SCRIPT).main(["--quick", "--keep", "stem"])


def test_a_kernel_table_of_the_other_timing_or_not_a_table_is_refused_naming_the_flag(
        cifar10_file, tmp_path, monkeypatch, capsys, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--quick", "--kernel-table", str(NETWORKS / "kt_r18_warm.json")])
    err = capsys.readouterr().err
    assert "timed with warm weights, this table times them with cold weights" in err
    assert "(--kernel-timing warm reads it)" in err
    bad = tmp_path / "table.json"
    bad.write_text("{\"latency\": 1}")
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main(["--quick", "--kernel-table", str(bad)])
    assert "not a kernel table" in capsys.readouterr().err
