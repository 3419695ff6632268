"""The examples a user runs first: notebooks executed end to end, scripts on small settings.

Notebooks run with nbclient on the ``python3`` kernel (CI: ``python -m ipykernel install
--sys-prefix`` makes it available in the virtual environment).
"""
import pathlib
import shutil

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _execute_notebook(name, timeout=300, parameters=None):
    """Runs the notebook; ``parameters`` (source code) runs right after the cell tagged "parameters",
    overriding its settings (as papermill does)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    if parameters:
        tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
        assert tagged, f"{name} has no cell tagged 'parameters'"
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(parameters))
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    return notebook


def _outputs(notebook):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_quickstart_notebook_runs_and_renders_html_and_a_plot():
    outputs = _outputs(_execute_notebook("quickstart.ipynb"))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("text/html" in o.get("data", {}) for o in outputs)     # symbolic objects as HTML
    assert any("image/png" in o.get("data", {}) for o in outputs)     # study.plot()
    text = "".join(o.get("text", "") for o in outputs)
    assert "accuracy" in text and "MaxPool" in text


def test_joint_search_notebook_compares_three_spaces():
    outputs = _outputs(_execute_notebook("joint_search.ipynb"))
    text = "".join(o.get("text", "") for o in outputs)
    for name in ("joint", "arch-only", "hp-only"):
        assert f"{name}" in text
    assert "best validation accuracy" in text


def test_kernel_architecture_search_notebook_samples_encodes_and_searches_kernels():
    outputs = _outputs(_execute_notebook("kernel_architecture_search.ipynb"))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    for name in ("depthwise_separable", "spatially_separable", "involution_like"):
        assert f"{{'{name}'}}" in text          # each hand-written design is classified as its family
    assert "best:" in text and "parameters" in text


def test_mobilenetv2_s1_takes_at_most_23_added_lines_and_algorithms_swap_in_one_line(capsys, load_script):
    example = load_script("examples/mobilenetv2_spaces.py")
    added = example.main(["--trials", "1", "--width", "0.1"])
    assert added <= 23
    out = capsys.readouterr().out
    assert f"S1: {added} added/changed lines" in out
    for name in ("Random", "Bayesian", "Reinforce"):
        assert f"{name:9s}: best accuracy" in out
    lines = list(example.ALGORITHM_LINES.values())
    assert all(len(line.splitlines()) == 1 for line in lines) and len(set(lines)) == 3


def test_kernel_search_notebook_searches_times_and_runs_the_kernel_in_torch():
    outputs = _outputs(_execute_notebook("kernel_search.ipynb"))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "best kernel" in text and "speedup" in text
    error = float(text.split("max |TVM - torch|:")[1].split()[0])
    assert error < 1e-4


# a 4-block ResNet of width 16, 20 candidates, its kernel latencies read from a saved table: seconds
SMALL_NETWORK_SEARCH = """
network = sn.nn.resnet((1, 1, 1, 1), width=16)
options = [[P.Group(2)], [P.Group(4)], [P.Bottleneck(2, axis="ci")]]
trials, target_speedup, batch_size, fill_checks, rounds = 20, 1.5, 16, 2, 1
kernel_table = sn.pte.KernelTable(path={table!r})
"""


def _network_search_figures(notebook):
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "exact check (network): legal=True" in text
    illegal, candidates = text.split(" candidates illegal")[0].rsplit("\n", 1)[-1].split(" of ")
    assert "torch.Size([2, 10])" in text                              # saved, loaded and built
    return text, int(illegal), int(candidates), float(text.split("speedup ")[1].split("x")[0])


def test_network_search_notebook_runs_the_one_call_end_to_end_on_a_small_network(cifar10_file, tmp_path):
    table = tmp_path / "kt.json"            # a copy: the run writes its table back
    shutil.copy(pathlib.Path(__file__).resolve().parent / "data" / "kt_resnet_1111_w16_cold.json", table)
    text, illegal, candidates, speedup = _network_search_figures(
        _execute_notebook("network_search.ipynb", parameters=SMALL_NETWORK_SEARCH.format(table=str(table))))
    assert 0 < illegal < candidates == 20                             # the proxy rejected some, not all
    assert "kernel table: 39 latencies read, 0 kernels compiled" in text
    assert speedup > 0                                                # measured (a tiny net: TVM's call overhead)


@pytest.mark.slow
def test_network_search_notebook_finds_a_faster_legal_resnet18_with_the_one_call(cifar10_file):
    # the search cell compiles ~50 kernels and two whole networks: minutes on a busy 2-core machine
    text, illegal, candidates, speedup = _network_search_figures(_execute_notebook("network_search.ipynb", timeout=900))
    assert 0 < illegal < candidates == 60                             # the proxy rejected some, not all
    assert speedup > 1.2                                              # measured, whole network, compiled


def test_hw_cosearch_notebook_costs_presets_searches_jointly_and_draws_a_pareto_front():
    pytest.importorskip("zigzag")
    outputs = _outputs(_execute_notebook("hw_cosearch.ipynb"))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    for preset in ("edge_tpu_like", "tpu_like", "eyeriss_like"):
        assert preset in text
    assert "designs feasible" in text and "best:" in text and "LOMA search:" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)     # the Pareto front
