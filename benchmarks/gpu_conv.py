"""CUDA kernels from transformation sequences with bind steps, timed beside torch/cuDNN.

Two halves, because the GPU machine has no TVM (and another Python):

* ``--export DIR`` (here, with TVM and nvcc): lowers a set of schedules of one conv layer
  (neural variants x GPU templates with blockIdx/threadIdx binds) to CUDA C with TVM,
  compiles each to a cubin for sm_90 with nvcc and writes ``DIR/manifest.json``
  (kernel name, launch grid, argument order, shapes, FLOPs, step sequence).
* ``--run DIR`` (on the GPU, needs only torch): loads each cubin through the CUDA driver
  API (ctypes, ``libcuda``), checks it against ``torch.nn.functional.conv2d`` with the
  same weights, times it with CUDA events, and times cuDNN on the untransformed conv and
  on the same neural variant.

    python benchmarks/gpu_conv.py --export carry/gpu        # here
    python benchmarks/gpu_conv.py --run carry/gpu           # on the GPU machine
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

LAYER = dict(c_in=64, c_out=64, h=32, w=32, k=3, stride=1)


# ---------------------------------------------------------------- export (here) ----
def neural_variants():
    import symnas as sn  # pylint: disable=import-outside-toplevel
    P = sn.program
    return {"original": [], "group2": [P.Group(2)], "group4": [P.Group(4)],
            "bottleneck2": [P.Bottleneck(2)], "group2+bottleneck2": [P.Group(2), P.Bottleneck(2)],
            "spatial2": [P.Bottleneck(2, axis="oh"), P.Bottleneck(2, axis="ow")]}


def reference_args(steps):
    """F.conv2d arguments equal to the neural variant (groups, output channels, stride)."""
    groups, out, stride = 1, LAYER["c_out"], [LAYER["stride"], LAYER["stride"]]
    for step in steps:
        name = type(step).__name__
        if name == "Group":
            groups *= step.groups
        elif name == "Bottleneck" and step.axis == "co":
            out //= step.factor
        elif name == "Bottleneck":
            # A spatial bottleneck keeps every factor-th output: a strided convolution.
            stride[0 if step.axis == "oh" else 1] *= step.factor
    return {"groups": groups, "c_out": out, "stride": stride}


def export(directory, configs):
    import symnas as sn  # pylint: disable=import-outside-toplevel
    P = sn.program
    os.makedirs(directory, exist_ok=True)
    op = P.Conv2d(**LAYER)
    jobs = []
    for variant, neural in neural_variants().items():
        for co_block, oh_block, threads_co, threads_oh, ci_block in configs:
            schedule = P.Schedule(op, list(neural) + P.gpu_conv_template(
                co_block, oh_block, threads_co, threads_oh, ci_block))
            name = (f"{variant}_c{co_block}o{oh_block}t{threads_co}x{threads_oh}"
                    + (f"_shared{ci_block}" if ci_block else ""))
            try:
                source = schedule.cuda_source()
                script = schedule.lower("cuda").script()
            except P.IllegalTransformation as error:
                print(f"skip {name}: {error.reason[:100]}")
                continue
            kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?'
                                 r'(\w+)\(([^)]*)\)\s*{', source)
            if len(kernels) != 1:
                print(f"skip {name}: {len(kernels)} kernels")
                continue
            kernel, params = kernels[0]
            args = [p.strip().split()[-1].replace("_ptr", "") for p in params.split(",")]
            grid = [int(x) for x in re.findall(r'thread_binding\((\d+), thread="blockIdx.x"\)',
                                               script)]
            block = [int(x) for x in re.findall(
                r'thread_binding\((\d+), thread="threadIdx.x"\)', script)]
            path = os.path.join(directory, name)
            with open(path + ".cu", "w", encoding="utf-8") as f:
                f.write(source)
            jobs.append(dict(name=name, variant=variant, kernel=kernel, args=args,
                             grid=grid[0], block=block[0], cubin=name + ".cubin",
                             input_shape=list(schedule.input_shape),
                             weight_shape=list(schedule.weight_shapes[0]),
                             output_shape=list(schedule.output_shape), flops=schedule.flops,
                             reference=reference_args(neural), steps=schedule.describe()))

    def compile_one(job):
        path = os.path.join(directory, job["name"])
        subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-O3", "-o", path + ".cubin",
                        path + ".cu"], check=True, capture_output=True)
        os.remove(path + ".cu")
        return job

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        done = list(pool.map(compile_one, jobs))
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(dict(layer=LAYER, kernels=done), f, indent=1)
    print(f"exported {len(done)} cubins to {directory}")


# ------------------------------------------------------------------- run (GPU) ----
class CudaDriver:
    """The few driver-API calls needed to load a cubin and launch a kernel."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")

    def check(self, result, what):
        if result != 0:
            message = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(message))
            raise RuntimeError(f"{what}: CUDA error {result} {message.value}")

    def load(self, cubin_path, kernel):
        with open(cubin_path, "rb") as f:
            data = f.read()
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), data), "cuModuleLoadData")
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(function), module,
                                                kernel.encode()), "cuModuleGetFunction")
        return function

    def launcher(self, function, grid, block, tensors, stream):
        pointers = [ctypes.c_void_p(t.data_ptr()) for t in tensors]
        params = (ctypes.c_void_p * len(pointers))(
            *[ctypes.cast(ctypes.byref(p), ctypes.c_void_p) for p in pointers])

        def launch():
            self.check(self.lib.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0,
                                               ctypes.c_void_p(stream), params, None),
                       "cuLaunchKernel")
        launch.keep = (pointers, params)
        return launch


def time_cuda(fn, torch, iters=200):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    results = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        results.append(start.elapsed_time(end) / iters)
    results.sort()
    return results[len(results) // 2]


def run(directory):
    import torch  # pylint: disable=import-outside-toplevel
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    layer = manifest["layer"]
    torch.backends.cudnn.benchmark = True
    # Our kernels compute in fp32; cuDNN would otherwise use TF32 tensor cores.
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    torch.zeros(1, device=device)  # makes the primary context current for the driver API
    driver = CudaDriver()
    stream = torch.cuda.current_stream().cuda_stream
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} cuDNN "
          f"{torch.backends.cudnn.version()} (fp32, TF32 off); layer {layer}, batch 1, fp32")
    x = torch.randn(manifest["kernels"][0]["input_shape"], device=device)
    pad = layer["k"] // 2
    cudnn = {}
    rows = []
    for job in manifest["kernels"]:
        ref = job["reference"]
        w = torch.randn(job["weight_shape"], device=device)
        out = torch.empty(job["output_shape"], device=device)
        tensors = {"data": x, "weight0": w, "conv": out}
        function = driver.load(os.path.join(directory, job["cubin"]), job["kernel"])
        launch = driver.launcher(function, job["grid"], job["block"],
                                 [tensors[a] for a in job["args"]], stream)
        launch()
        expected = F.conv2d(x, w, stride=ref["stride"], padding=pad, groups=ref["groups"])
        torch.cuda.synchronize()
        if expected.shape != out.shape:
            print(f"skip {job['name']}: output {tuple(out.shape)} vs reference "
                  f"{tuple(expected.shape)}")
            continue
        error = (out - expected).abs().max().item()
        latency = time_cuda(launch, torch)
        key = (ref["groups"], ref["c_out"], tuple(ref["stride"]))
        if key not in cudnn:
            cudnn[key] = time_cuda(lambda: F.conv2d(x, w, stride=ref["stride"], padding=pad,
                                                    groups=ref["groups"]), torch)
        rows.append((job, latency, error, cudnn[key]))
    original = cudnn[(1, layer["c_out"], (layer["stride"], layer["stride"]))]
    flops0 = max(job["flops"] for job in manifest["kernels"])
    print(f"{'kernel':36} {'TVM ms':>8} {'cuDNN same op':>13} {'vs cuDNN orig':>13} "
          f"{'FLOPs':>6} {'max err':>8}")
    best = {}
    for job, latency, error, same in sorted(rows, key=lambda r: r[1]):
        print(f"{job['name']:36} {latency:8.4f} {same:13.4f} {original / latency:12.2f}x "
              f"{job['flops'] / flops0:6.3f} {error:8.1e}")
        key = (job["variant"], "shared" if "_shared" in job["name"] else "registers only")
        if key not in best or latency < best[key][1]:
            best[key] = (job, latency, same)
    print(f"\ncuDNN untransformed conv: {original:.4f} ms")
    for (variant, staging), (job, latency, same) in sorted(best.items()):
        print(f"best {variant:20} {staging:15} TVM {latency:.4f} ms (cuDNN on the same op {same:.4f} ms, "
              f"speedup over cuDNN original {original / latency:.2f}x): {job['steps']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", metavar="DIR")
    parser.add_argument("--run", metavar="DIR")
    parser.add_argument("--quick", action="store_true", help="export 2 template configs")
    args = parser.parse_args()
    configs = [(1, 1, 16, 2), (2, 1, 16, 2), (2, 2, 8, 4), (1, 2, 8, 2), (4, 1, 8, 2),
               (2, 2, 4, 4), (1, 1, 8, 4), (4, 2, 4, 2)]
    # the same tilings with input/weight tiles staged in shared memory (CacheRead at ci.0)
    configs = [c + (0,) for c in configs] + [c + (ci,) for c in configs for ci in (4, 8)]
    if args.quick:
        configs = [configs[0], configs[8]]
    if args.export:
        start = time.time()
        export(args.export, configs)
        print(f"export took {time.time() - start:.0f} s")
    if args.run:
        run(args.run)
    if not (args.export or args.run):
        parser.error("give --export DIR or --run DIR")


if __name__ == "__main__":
    sys.exit(main())
