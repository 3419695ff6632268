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
* ``--baselines`` (with ``--run``, or alone): the untransformed conv as a user would run it in
  torch: cuDNN fp32 NCHW (the kernels' baseline), cuDNN fp32 channels-last, cuDNN with TF32 on
  (NCHW and channels-last: tensor cores, 10-bit mantissa products), ``torch.compile`` (default
  and max-autotune, fp32), and the launch-overhead floor: an empty kernel launched through the
  driver API as the TVM kernels are, and a one-element torch fill. Alone, ``--device cpu``
  runs it on the CPU (no TF32, no empty kernel) as a smoke test.

    python benchmarks/gpu_conv.py --export carry/gpu                # here
    python benchmarks/gpu_conv.py --run carry/gpu --baselines       # on the GPU machine
    python benchmarks/gpu_conv.py --baselines --device cpu          # the baselines alone, here
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

    def load_ptx(self, ptx, kernel):
        """A kernel from PTX text (the driver compiles it for this GPU)."""
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(ptx.encode())),
                   "cuModuleLoadData")
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(function), module, kernel.encode()),
                   "cuModuleGetFunction")
        return function

    def launcher(self, function, grid, block, tensors, stream):
        pointers = [ctypes.c_void_p(t.data_ptr()) for t in tensors]
        params = (ctypes.c_void_p * len(pointers))(
            *[ctypes.cast(ctypes.byref(p), ctypes.c_void_p) for p in pointers]) if pointers else None

        def launch():
            self.check(self.lib.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0,
                                               ctypes.c_void_p(stream), params, None),
                       "cuLaunchKernel")
        launch.keep = (pointers, params)
        return launch


EMPTY_PTX = """.version 7.0
.target sm_70
.address_size 64
.visible .entry empty_kernel()
{
    ret;
}
"""


def time_cpu(fn, iters=50):
    """Median of 5 runs of ``iters`` calls (ms per call), after a warm-up; for the CPU smoke run."""
    for _ in range(5):
        fn()
    results = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        results.append((time.perf_counter() - start) / iters * 1e3)
    results.sort()
    return results[len(results) // 2]


def torch_conv_baselines(torch, x, w, stride, pad, groups, compile_modes=(None, "max-autotune")):
    """How torch runs this conv, as (label, TF32 on, callable) triples: cuDNN (oneDNN on the CPU)
    fp32 NCHW and channels-last, the same with TF32 (CUDA only), and ``torch.compile`` of the conv
    per mode (fp32, NCHW). A compile that fails is returned as (label, False, the error message)."""
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_cl = w.contiguous(memory_format=torch.channels_last)

    def conv(a, b):
        return F.conv2d(a, b, stride=stride, padding=pad, groups=groups)

    library = "cuDNN" if x.is_cuda else "oneDNN"
    rows = [(f"{library} fp32 NCHW", False, lambda: conv(x, w)),
            (f"{library} fp32 channels-last", False, lambda: conv(x_cl, w_cl))]
    if x.is_cuda:
        rows += [("cuDNN TF32 NCHW", True, lambda: conv(x, w)),
                 ("cuDNN TF32 channels-last", True, lambda: conv(x_cl, w_cl))]
    for mode in compile_modes:
        label = "torch.compile" + (f" {mode}" if mode else "") + " fp32"
        try:
            compiled = torch.compile(conv, mode=mode)
            with tf32(torch, False):
                compiled(x, w)
            rows.append((label, False, lambda c=compiled: c(x, w)))
        except Exception as error:  # pylint: disable=broad-except  (a baseline that fails is listed)
            rows.append((label, False, f"{type(error).__name__}: {str(error)[:200]}"))
    return rows


def tf32(torch, on):
    """cuDNN's TF32 switch for the block (cuDNN stays in benchmark mode)."""
    return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=on)


def time_baselines(torch, layer, device, compile_modes=(None, "max-autotune"), driver=None, stream=None):
    """ms of each torch baseline of the untransformed conv, its max |error| against fp32 NCHW, and
    the launch-overhead floor (on CUDA): ``{label: (ms or None, error or message)}``."""
    x = torch.randn(1, layer["c_in"], layer["h"], layer["w"], device=device)
    w = torch.randn(layer["c_out"], layer["c_in"], layer["k"], layer["k"], device=device)
    stride, pad = layer["stride"], layer["k"] // 2
    timer = (lambda fn: time_cuda(fn, torch)) if x.is_cuda else time_cpu
    with tf32(torch, False):
        expected = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    results = {}
    for label, tf32_on, fn in torch_conv_baselines(torch, x, w, stride, pad, 1, compile_modes):
        if isinstance(fn, str):
            results[label] = (None, fn)
            continue
        with tf32(torch, tf32_on):
            error = (fn() - expected).abs().max().item()
            results[label] = (timer(fn), error)
    if x.is_cuda:
        driver = driver or CudaDriver()
        stream = torch.cuda.current_stream().cuda_stream if stream is None else stream
        empty = driver.launcher(driver.load_ptx(EMPTY_PTX, "empty_kernel"), 1, 1, [], stream)
        results["floor: empty kernel (driver launch)"] = (timer(empty), None)
        one = torch.zeros(1, device=device)
        results["floor: 1-element torch fill"] = (timer(lambda: one.fill_(1.0)), None)
    return results


def print_baselines(results, device_name):
    print(f"\n# the untransformed conv {LAYER} in torch on {device_name}, batch 1 (ms per call; max |error| against fp32 NCHW)")
    for label, (ms, error) in results.items():
        if ms is None:
            print(f"{label:40} failed: {error}")
        else:
            print(f"{label:40} {ms:8.4f}" + ("" if error is None else f"   max err {error:.1e}"))
    timed = {k: v[0] for k, v in results.items() if v[0] is not None and not k.startswith("floor")}
    fp32 = {k: v for k, v in timed.items() if "TF32" not in k}
    if fp32:
        best = min(fp32, key=fp32.get)
        print(f"best fp32 way: {best} {fp32[best]:.4f} ms" + (
            f"; best with TF32 allowed: {min(timed, key=timed.get)} {min(timed.values()):.4f} ms" if timed else ""))


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


def run(directory, baselines=False):
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
    if baselines:
        results = time_baselines(torch, layer, device, driver=driver, stream=stream)
        print_baselines(results, torch.cuda.get_device_name())
        fastest = min(latency for _, latency, _, _ in rows)
        fp32 = {k: v[0] for k, v in results.items()
                if v[0] is not None and not k.startswith("floor") and "TF32" not in k}
        best_label = min(fp32, key=fp32.get)
        print(f"fastest TVM kernel {fastest:.4f} ms: {fp32[best_label] / fastest:.2f}x over the best fp32 "
              f"torch original ({best_label}); launch floor {results['floor: empty kernel (driver launch)'][0]:.4f} ms")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", metavar="DIR")
    parser.add_argument("--run", metavar="DIR")
    parser.add_argument("--quick", action="store_true", help="export 2 template configs")
    parser.add_argument("--baselines", action="store_true",
                        help="also time the untransformed conv the ways torch runs it, and the launch floor")
    parser.add_argument("--device", default="cuda", help="--baselines alone: cuda (default) or cpu")
    parser.add_argument("--no-compile", action="store_true", help="--baselines without torch.compile")
    args = parser.parse_args(argv)
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
        run(args.run, baselines=args.baselines)
    elif args.baselines:
        import torch  # pylint: disable=import-outside-toplevel
        results = time_baselines(torch, LAYER, torch.device(args.device),
                                 compile_modes=() if args.no_compile else (None, "max-autotune"))
        print_baselines(results, torch.cuda.get_device_name() if args.device == "cuda" else "the CPU")
        return results
    if not (args.export or args.run or args.baselines):
        parser.error("give --export DIR, --run DIR or --baselines")
    return None


if __name__ == "__main__":
    main()
