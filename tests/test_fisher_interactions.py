"""benchmarks/fisher_interactions.py: what grouping some convs does to every layer's Fisher in the network."""
import pytest
import torch

import symnas as sn
from symnas.proxies.legality import LegalityCheck

SCRIPT = "benchmarks/fisher_interactions.py"


def _tiny_densenet():
    return sn.nn.densenet(blocks=(2, 2), growth=8, bn_size=2)


def test_each_row_is_what_the_exact_check_sees(load_script):
    script, net = load_script(SCRIPT), _tiny_densenet()
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    one, every = script.interactions(net, ["1:1", "3:all"], x, y, groups=2)
    threes = [s for s in sn.nn.transformable_convs(net) if s.layer.kernel == 3]
    assert (one["changed"], every["changed"]) == (1, len(threes)) and every["layers"] == len(
        sn.nn.transformable_convs(net))
    # the same ratios as the legality check's own scores of that candidate
    candidate = sn.nn.replace_convs(net, script.grouped_sites(net, "3:all", 2))
    result = LegalityCheck(mode="network").check(net, candidate, x, y)
    assert every["network_ratio"] == pytest.approx(result.candidate_score / result.original_score)
    assert sorted(every["changed_ratios"]) == pytest.approx(sorted(c / o for o, c in result.per_layer.values()))
    assert every["changed_fallen"] == len(LegalityCheck().check(net, candidate, x, y).failing_layers)
    assert all(s.layer.groups == 2 for s in sn.nn.transformable_convs(candidate) if s.layer.kernel == 3)


def test_bad_changes_are_refused_by_name(load_script, capsys):
    script, net = load_script(SCRIPT), _tiny_densenet()
    with pytest.raises(ValueError, match="KERNEL:INDEX or KERNEL:all"):
        script.grouped_sites(net, "3-all", 2)
    with pytest.raises(ValueError, match="no transformable 5x5 conv"):
        script.grouped_sites(net, "5:0", 2)
    with pytest.raises(ValueError, match="has 4 transformable 1x1 convs"):
        script.grouped_sites(net, "1:9", 2)
    with pytest.raises(ValueError, match="cannot be grouped by 3"):
        script.grouped_sites(net, "3:0", 3)
    with pytest.raises(SystemExit):
        script.main(["--backbone", "resnet18", "--change", "7:0"])
    assert "no transformable 7x7 conv" in capsys.readouterr().err
