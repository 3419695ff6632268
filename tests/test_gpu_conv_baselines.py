"""The GPU conv benchmark's torch baselines, smoke-tested on the CPU (the GPU run needs a CUDA machine)."""
import shutil
import subprocess

import pytest

SCRIPT = "benchmarks/gpu_conv.py"


def test_cpu_baselines_compute_the_same_conv_and_are_timed(load_script, capsys):
    results = load_script(SCRIPT).main(["--baselines", "--device", "cpu", "--no-compile"])
    assert set(results) == {"oneDNN fp32 NCHW", "oneDNN fp32 channels-last"}    # no TF32, no launch floor on CPU
    for ms, error in results.values():
        assert 0 < ms < 1000 and error < 1e-3
    assert "best fp32 way:" in capsys.readouterr().out


def test_the_empty_kernel_assembles_for_hopper(load_script, tmp_path):
    """The launch-overhead floor's PTX is valid for sm_90 (ptxas, where the CUDA toolkit is installed)."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) is not installed")
    source = tmp_path / "empty.ptx"
    source.write_text(load_script(SCRIPT).EMPTY_PTX)
    done = subprocess.run([ptxas, "-arch=sm_90", str(source), "-o", str(tmp_path / "empty.cubin")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "empty.cubin").stat().st_size > 0
