"""Whole networks through TVM Relax tuned by MetaSchedule, beside symnas' compiled networks (batch 1, CPU).

``nas_pte.py`` compares a transformed network with the original compiled the symnas way (every
conv a TVM kernel from the template table, the rest torch) and reports Relax only untuned. This
script adds TVM's own whole-network route as a baseline: ``torch.export`` ->
``from_exported_program`` -> ``relax.get_pipeline("static_shape_tuning")`` (operator fusion, then
MetaSchedule with its XGBoost cost model on every fused task, ``--trials-per-task`` measured
candidates each) -> ``tvm.compile``.
Every model given is timed, in one process with interleaved rounds, as:

- torch eager,
- ``sn.nn.compile_network(net, tune=True)`` (symnas; each conv its fastest measured template),
  run as its flat plan, and the same kernels called through the torch modules (``plan=False``),
- Relax + MetaSchedule (``--trials-per-task`` > 0), or Relax untuned (``--trials-per-task 0``),
- with ``--preactivation-in-torch``, also compiled with ``fuse_preactivation=False`` (the batch
  norm + ReLU before a conv left to torch instead of read through the kernel's prologue), for
  networks that have any (DenseNet).

It then splits each flat plan's time into its TVM kernels and the rest (the torch glue: pre-activation
batch norms, concatenations, pooling, the classifier) and prints the speedup over the first model that
convs taking no time at all would give: the ceiling of any conv transformation of that network.

Models are symbolic networks saved by ``nas_pte.py --export DIR`` (JSON). Tuning needs
``xgboost`` (``pip install -e ".[tune]"``).

Usage::

    python benchmarks/relax_baseline.py --models runs/models/resnet34_original.json \
        runs/models/resnet34_ours.json --trials-per-task 64 --tune-models 1
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import symnas as sn  # noqa: E402  pylint: disable=wrong-import-position
from nas_pte import end_to_end_timings, kernel_share  # noqa: E402  pylint: disable=wrong-import-position


class RelaxNetwork:
    """A network compiled by TVM Relax (optionally MetaSchedule-tuned), called like a torch module.

    ``RelaxNetwork.compile(model, trials_per_task)`` exports ``model`` with ``torch.export`` at
    batch 1 and compiles it for this CPU; ``trials_per_task=0`` skips tuning.
    """

    def __init__(self, vm, tuning_seconds: float, tasks: int, trials: int):
        self.vm, self.tuning_seconds, self.tasks, self.trials = vm, tuning_seconds, tasks, trials

    @classmethod
    def compile(cls, model: torch.nn.Module, trials_per_task: int, in_shape=(1, 3, 32, 32),
                work_dir: str | None = None) -> "RelaxNetwork":
        # pylint: disable=import-outside-toplevel
        import tvm
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program
        from tvm.s_tir import meta_schedule as ms
        if trials_per_task < 0:
            raise ValueError(f"trials_per_task must be >= 0, got {trials_per_task}")
        target = tvm.target.Target(sn.program.lower_tvm.host_target())
        with torch.no_grad():
            program = torch.export.export(model.eval(), (torch.randn(*in_shape),))
        mod = from_exported_program(program, keep_params_as_input=False)
        start, tasks, trials = time.time(), 0, 0
        if trials_per_task:
            try:
                import xgboost  # noqa: F401  pylint: disable=unused-import
            except ImportError as e:
                raise ImportError("Relax's tuning pipeline needs xgboost (pip install -e \".[tune]\")") from e
            with target:   # the passes the tuning pipeline runs before it extracts tasks
                fused = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                                  relax.transform.CanonicalizeBindings(),
                                                  relax.get_pipeline("zero")])(mod)
            tasks = len(ms.relax_integration.extract_tasks(fused, target))
            trials = trials_per_task * tasks
            with tempfile.TemporaryDirectory() as tmp:
                mod = relax.get_pipeline("static_shape_tuning", total_trials=trials, target=target,
                                         work_dir=work_dir or tmp, max_trials_per_task=trials_per_task)(mod)
        seconds = time.time() - start
        return cls(relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu()), seconds, tasks, trials)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import tvm  # pylint: disable=import-outside-toplevel
        out = self.vm["main"](tvm.runtime.tensor(x.numpy()))
        out = out[0] if not hasattr(out, "numpy") else out
        return torch.from_numpy(out.numpy())


def main(argv=None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", nargs="+", required=True, help="symbolic networks saved as JSON")
    parser.add_argument("--trials-per-task", type=int, default=64,
                        help="MetaSchedule trials per fused task (0: Relax untuned)")
    parser.add_argument("--tune-models", type=int, default=None,
                        help="tune only the first N models with Relax (default: all; tuning takes minutes)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (min is reported)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--work-dir", default=None, help="keep MetaSchedule's logs here (default: a temp folder)")
    parser.add_argument("--preactivation-in-torch", action="store_true",
                        help="also time each network with its pre-activation batch norms left to torch")
    args = parser.parse_args(argv)
    if args.trials_per_task < 0:
        parser.error(f"--trials-per-task must be >= 0, got {args.trials_per_task}")
    if args.tune_models is not None and args.tune_models < 0:
        parser.error(f"--tune-models must be >= 0, got {args.tune_models}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    missing = [m for m in args.models if not os.path.isfile(m)]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)}")
    torch.set_num_threads(sn.program.measure.num_threads())
    print(f"relax_baseline: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)", flush=True)
    x = torch.randn(1, 3, 32, 32)
    timed: Dict[str, Any] = {}
    info: Dict[str, Dict[str, Any]] = {}
    for i, path in enumerate(args.models):
        name = os.path.splitext(os.path.basename(path))[0]
        net = sn.load(path)   # JSON only: nothing in the file runs
        model = net.build((3, 32, 32)).eval()
        with torch.no_grad():
            reference = model(x)
        start = time.time()
        compiled = sn.nn.compile_network(net, copy.deepcopy(model), tune=True)   # same weights
        info[name] = {"params": sn.nn.count_params(model),
                      "symnas_compile_seconds": time.time() - start}
        timed[f"{name} | torch eager"] = model
        timed[f"{name} | symnas TVM"] = compiled
        timed[f"{name} | symnas TVM, through the modules"] = sn.nn.CompiledNetwork(
            compiled.model, compiled.schedules, compiled.fallbacks, compiled.glue_threads, compiled.fused, plan=False)
        info[name]["prologues_fused"] = sum(getattr(m, "prologue", False) for m in compiled.model.modules())
        if args.preactivation_in_torch and info[name]["prologues_fused"]:
            timed[f"{name} | symnas TVM, pre-activation in torch"] = sn.nn.compile_network(
                net, copy.deepcopy(model), tune=True, fuse_preactivation=False)
        if args.tune_models is None or i < args.tune_models:
            work_dir = os.path.join(args.work_dir, name) if args.work_dir else None
            try:
                relax_net = RelaxNetwork.compile(model, args.trials_per_task, work_dir=work_dir)
            except Exception as e:  # pylint: disable=broad-except  (a baseline that fails is reported)
                info[name]["relax_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"  {name}: Relax failed: {info[name]['relax_error']}", flush=True)
            else:
                label = (f"Relax + MetaSchedule {args.trials_per_task}/task" if args.trials_per_task
                         else "Relax untuned")
                timed[f"{name} | {label}"] = relax_net
                info[name].update(relax_tasks=relax_net.tasks, relax_trials=relax_net.trials,
                                  relax_seconds=relax_net.tuning_seconds)
                print(f"  {name}: {label}: {relax_net.tasks} tasks, {relax_net.trials} trials, "
                      f"{relax_net.tuning_seconds:.0f} s", flush=True)
        with torch.no_grad():
            for key in [k for k in timed if k.startswith(f"{name} |")]:
                error = float((timed[key](x) - reference).abs().max())
                info[name][f"max_abs_error {key.split(' | ')[1]}"] = error
                if not error < 1e-3:
                    raise RuntimeError(f"{key} disagrees with torch: max |error| {error:.3g}")
    runs = end_to_end_timings(timed, rounds=args.rounds)
    best = {k: min(v) for k, v in runs.items()}
    first = os.path.splitext(os.path.basename(args.models[0]))[0]
    baseline = min(v for k, v in best.items() if k.startswith(f"{first} |"))
    print(f"\n  batch 1, one process, min of {args.rounds} interleaved rounds (ms); speedup vs the best way "
          f"to run {first} ({baseline:.2f} ms)")
    print(f"  {'model | how':60s} {'ms':>8s} {'speedup':>8s}   params")
    for key, ms in best.items():
        name = key.split(" | ")[0]
        print(f"  {key:60s} {ms:8.2f} {baseline / ms:7.2f}x   {info[name]['params'] / 1e6:.2f}M")
    print(f"\n  inside each compiled network (flat plan, mean of {args.rounds * 3} calls, ms): its TVM kernels, "
          f"the rest (torch glue), and the speedup over {first} if the convs took no time at all")
    for name in info:
        share = kernel_share(timed[f"{name} | symnas TVM"], rounds=args.rounds * 3)
        rest = share["total"] - share["kernels"]
        info[name].update(kernels_in_network_ms=share["kernels"], outside_kernels_ms=rest)
        print(f"  {name:40s} kernels {share['kernels']:7.2f}   rest {rest:7.2f}   bound {baseline / rest:6.2f}x")
    result = {"date": f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC", "machine": platform.node(),
              "trials_per_task": args.trials_per_task, "ms": best, "runs": runs, "models": info}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
