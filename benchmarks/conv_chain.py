"""A kernel's two convs as one fused TVM function vs two functions, per conv shape of a backbone.

For each distinct 3x3 conv of ``--backbone``, the kernel (``--kernel``, sized by ``--budget``) is
lowered to its two convs (``sn.kas.conv_chain``) and timed three ways with TVM's time evaluator
(``sn.program.fastest_chain``): two functions (each conv's fastest CPU template, the sum), one
function holding both (each conv on its template), and fused (the first conv computed per row tile
of the second, under its parallel loop). The weighted total multiplies each shape by its count.

Usage::

    python benchmarks/conv_chain.py --backbone resnet34 --kernel depthwise_separable spatially_separable
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import symnas as sn

KERNELS = {"depthwise_separable": sn.kas.depthwise_separable, "spatially_separable": sn.kas.spatially_separable,
           "dilated_separable": lambda: sn.kas.depthwise_separable(dilation=2)}


def _stamp() -> str:
    load = os.getloadavg()
    return (f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backbone", default="resnet34", choices=sorted(sn.nn.BACKBONES))
    parser.add_argument("--kernel", nargs="+", default=["depthwise_separable"], choices=sorted(KERNELS))
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    net = sn.nn.backbone(args.backbone)
    targets = sn.kas.conv_targets(net)
    result = {}
    print(f"conv chains: {_stamp()}\n  {args.backbone}, TVM time evaluator, median of {args.repeat} (ms)")
    for name in args.kernel:
        kernel = KERNELS[name]()
        solution = sn.kas.solve_budget(kernel.analyze(), targets, kernel.groups, sn.kas.Budget(flops=args.budget))
        print(f"  {name}: {' -> '.join(kernel.names())}, FLOPs {solution.flops / solution.baseline_flops:.3f} "
              f"of the replaced convs'")
        print(f"  {'conv shape':22s} {'count':>5s} {'two functions':>14s} {'one function':>13s} {'fused':>8s}"
              f" {'fused/two':>10s}   fused schedule")
        totals = {"two_functions": 0.0, "one_function": 0.0, "fused": 0.0}
        rows = []
        for t in targets:
            env = {"C": t.c_in, "O": t.c_out, "H": t.h, "W": t.w, "S": t.stride, **solution.for_target(t)}
            chain = sn.kas.conv_chain(kernel, env)
            if chain is None:
                print(f"  {t.key:22s} the kernel is not a chain of two convs")
                continue
            best = sn.program.fastest_chain(chain.first, chain.second, chain.relu, repeat=args.repeat)
            ms = {k: v[0] for k, v in best.items()}
            fused = best["fused"][1]
            if fused is None:          # a strided second conv: not fused; the total counts two functions
                how, ms["fused"] = "not fused (strided second conv): two functions counted", ms["two_functions"]
            else:
                how = (f"co {fused.second_steps[0].factor} x rows {fused.second_steps[1].factor}"
                       + (f", first conv {fused.first_block} channels a block" if fused.first_block else ""))
            for k in totals:
                totals[k] += ms[k] * t.count
            print(f"  {t.key:22s} {t.count:5d} {ms['two_functions']:14.3f} {ms['one_function']:13.3f} "
                  f"{ms['fused']:8.3f} {ms['fused'] / ms['two_functions']:10.2f}   {how}")
            rows.append({"target": t.key, "count": t.count, "ms": ms, "fused_schedule": how})
        print(f"  {'weighted by count':22s} {sum(t.count for t in targets):5d} {totals['two_functions']:14.2f} "
              f"{totals['one_function']:13.2f} {totals['fused']:8.2f} "
              f"{totals['fused'] / totals['two_functions']:10.2f}")
        result[name] = {"rows": rows, "totals": totals}
    print(f"  done: {_stamp()}")
    result["when"] = _stamp()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
