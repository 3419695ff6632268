"""The NAS-PTE benchmark script end to end on ResNet-18 (``-m slow``: ~2 min on 2 cores) and its option errors."""
import json
import math

import pytest


@pytest.mark.slow
def test_network_mode_with_fill_budget_and_shuffle_reports_a_legal_network_within_the_budget(cifar10_file, tmp_path,
                                                                                  monkeypatch, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(cifar10_file.parents[1]))
    out = tmp_path / "result.json"
    load_script("benchmarks/nas_pte.py").main(["--quick", "--no-relax", "--mode", "network", "--fill-budget", "--fill-by", "snip",
                        "--fill-images", "16", "--target-speedup", "2",
                        "--channel-shuffle", "--exact-candidates", "3", "--json", str(out)])
    result, = json.loads(out.read_text())
    assert result["legality_mode"] == "network" and result["trials"] == 100
    assert result["fill_by"] == "snip" and result["fill_images"] == 16 and len(result["fill_upgrades"]) <= result["fill_checks"]
    assert result["exact_legality"]["network"]["legal"]          # the reported network passes the exact check
    latency = result["latency_ms"]
    assert latency["tvm_ours"] < latency["tvm_original"]
    if result["fill_upgrades"]:                                  # upgrades never overspend the budget
        assert latency["tvm_ours"] <= latency["tvm_original"] / 2 + 1e-9
    assert result["params"]["ours"] < result["params"]["original"]
    assert 0 <= result["unread_channel_share"] < 1 and result["no_dead_channels"] is False
    assert math.isfinite(result["end_to_end_ms"]["tvm_ours"])
    # --channel-shuffle: every grouping the network uses reads shuffled channels; the NAS-only baseline
    # (plain G=2, not in the menu then) is still timed per layer
    assert result["channel_shuffle"]
    grouped = [c["neural"] for c in result["chosen"].values() if "Group" in c["neural"]]
    assert grouped and all("ChannelShuffle" in n for n in grouped)
    assert all(math.isfinite(row["nas_ms"]) and row["nas_ms"] > 0 for row in result["layers"])


@pytest.mark.parametrize("argv, message", [(["--target-speedup", "0"], "--target-speedup must be positive"),
                                           (["--exact-candidates", "-1"], "--exact-candidates must be >= 0"),
                                           (["--fill-images", "0"], "--fill-images must be >= 1"),
                                           (["--proxy", "snip"], "--proxy snip: the block context reuses output "
                                                                 "gradients and is defined for fisher; add --context tail"),
                                           (["--proxy", "fisher_potential"], "invalid choice: 'fisher_potential'")])
def test_bad_options_are_refused_by_name_before_any_work(argv, message, capsys, load_script):
    with pytest.raises(SystemExit):
        load_script("benchmarks/nas_pte.py").main(argv)
    assert message in capsys.readouterr().err


def test_fisher_batch_without_cifar10_names_symnas_data(tmp_path, monkeypatch, load_script):
    cifar_batch = load_script("benchmarks/nas_pte.py").cifar_batch
    monkeypatch.delenv("SYMNAS_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="set SYMNAS_DATA to the data folder"):
        cifar_batch(4, 0)
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg.npz does not exist"):
        cifar_batch(4, 0)


def test_missing_cifar10_is_refused_before_any_kernel_is_compiled(tmp_path, monkeypatch, capsys, load_script):
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        load_script("benchmarks/nas_pte.py").main(["--quick"])
    assert "cifar10_jpeg.npz does not exist" in capsys.readouterr().err


@pytest.fixture
def placeholder_data(tmp_path, monkeypatch):
    """SYMNAS_DATA with an empty cifar10_jpeg.npz: passes the path check, fails when read."""
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg.npz").touch()
    monkeypatch.setenv("SYMNAS_DATA", str(tmp_path))
    return tmp_path


def test_keep_of_an_unknown_layer_is_refused_before_any_kernel_is_compiled(placeholder_data, load_script):
    with pytest.raises(ValueError, match="'stem' is not a transformable layer"):
        load_script("benchmarks/nas_pte.py").main(["--quick", "--keep", "stem"])


def test_kernel_table_saved_to_a_file_is_reused_without_compiling(tmp_path, load_script):
    import symnas as sn
    nas_pte = load_script("benchmarks/nas_pte.py")
    op = sn.program.Conv2d(c_in=8, c_out=8, h=8, w=8, k=3, stride=1, padding=1)
    grouped, too_big_split = [sn.program.Group(2)], [sn.program.Split(loop="oh", factor=16)]
    table = nas_pte.KernelTable(repeat=1)
    ms = table.measure(op, grouped, [])
    assert math.isfinite(ms) and table.measure(op, [], too_big_split) == math.inf and table.compiles == 2
    path = str(tmp_path / "table.json")
    table.save(path)

    again = nas_pte.KernelTable(repeat=1)
    assert again.load(path) == 2
    assert again.measure(op, grouped, []) == ms and again.remeasure(op, grouped, []) == ms
    assert again.measure(op, [], too_big_split) == math.inf
    assert again.compiles == 0


def test_a_kernel_table_timed_in_the_other_cache_mode_is_refused(tmp_path, load_script):
    import symnas as sn
    nas_pte = load_script("benchmarks/nas_pte.py")
    op = sn.program.Conv2d(c_in=8, c_out=8, h=8, w=8, k=3, stride=1, padding=1)
    cold = nas_pte.KernelTable(repeat=1, cold_weights=True)
    assert math.isfinite(cold.measure(op, [sn.program.Group(2)], []))
    path = str(tmp_path / "cold.json")
    cold.save(path)
    with pytest.raises(ValueError, match="timed with cold weights .* this run times them with warm"):
        nas_pte.KernelTable(repeat=1).load(path)
    assert nas_pte.KernelTable(repeat=1, cold_weights=True).load(path) == 1


def test_kernels_are_timed_cold_by_default_and_a_warm_table_is_refused_naming_the_flag(
        placeholder_data, capsys, load_script):
    import symnas as sn
    nas_pte = load_script("benchmarks/nas_pte.py")
    warm = nas_pte.KernelTable(repeat=1)
    warm.measure(sn.program.Conv2d(c_in=8, c_out=8, h=8, w=8, k=3, stride=1, padding=1), [], [])
    path = str(placeholder_data / "warm.json")
    warm.save(path)
    with pytest.raises(SystemExit):
        nas_pte.main(["--quick", "--kernel-table", path])
    err = capsys.readouterr().err
    assert "timed with warm weights (--kernel-timing warm), this run times them with cold weights" in err


def test_a_kernel_table_file_that_is_not_one_is_refused_before_any_work(placeholder_data, capsys, load_script):
    bad = placeholder_data / "table.json"
    bad.write_text("{\"latency\": 1}")
    with pytest.raises(SystemExit):
        load_script("benchmarks/nas_pte.py").main(["--quick", "--kernel-table", str(bad)])
    assert "not a kernel table saved by nas_pte" in capsys.readouterr().err


def test_no_dead_channels_drops_input_bottlenecks_of_private_input_convs_only(load_script, capsys):
    import symnas as sn
    nas_pte = load_script("benchmarks/nas_pte.py")

    def has_input_bottleneck(steps):
        return any(isinstance(s, sn.program.Bottleneck) and s.axis == "ci" for s in steps)

    # ResNeXt-29: the 1x1 reducing convs read the residual stream, the 3x3 and expanding 1x1 convs
    # read the conv before them only; no layer shape is both
    net = sn.nn.resnext29_2x64d()
    sites = sn.nn.transformable_convs(net)
    private = set(sn.nn.private_input_convs(net))
    menus = {s.key: sn.spaces.neural_menu(s.operator(), channel_shuffle=True) for s in sites}
    nas_pte.drop_input_bottlenecks(menus, sites, private)
    for site in sites:
        menu = menus[site.key]
        assert menu[0] == [] and len(menu) > 1
        if site.path in private:
            assert not any(has_input_bottleneck(steps) for steps in menu), site.path
    assert any(has_input_bottleneck(steps) for s in sites if s.path not in private for steps in menus[s.key])
    assert capsys.readouterr().out == ""

    # ResNet-18: a block's two 3x3 convs share a shape; the shared-input one keeps B(ci), and the run says so
    net = sn.nn.resnet18()
    sites = sn.nn.transformable_convs(net)
    menus = {s.key: sn.spaces.neural_menu(s.operator()) for s in sites}
    nas_pte.drop_input_bottlenecks(menus, sites, sn.nn.private_input_convs(net))
    assert all(any(has_input_bottleneck(steps) for steps in menu) for menu in menus.values())
    assert "also read a shared input and keep B(ci)" in capsys.readouterr().out
