"""Paired accuracy of a searched network against its original, from ``train_cifar.py`` results.

Each JOB argument is one GPU job: a ``train_cifar.json`` file or a folder searched for them
(``train_cifar_parallel.sh`` writes one per run). Within a job, the original's and ours' runs of
the same seed and recipe form a pair; pairs from all jobs are pooled per recipe (epochs, batch,
learning rate, init, gradient clipping), since the two arms must have trained identically. Prints
one table per recipe: every pair, the mean paired difference and its 95% t interval, and the runs
that diverged (``diverged_at_epoch``, or the same test on the loss history of older results).

Usage::

    python benchmarks/paired_accuracy.py runs/gpu_1202c runs/gpu_1202d --original r34_orig --ours r34_sh3
    python benchmarks/paired_accuracy.py JOB... --original A --ours B --exclude-diverged --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Dict, List

from symnas.train import diverging, t_interval

RECIPE_KEYS = ("epochs", "batch", "lr", "init", "clip_grad", "compile")
RECIPE_DEFAULTS = {"clip_grad": 0, "compile": False}   # for result files written before the key existed


def job_runs(job: str) -> List[dict]:
    """Every (model, seed, recipe) run in one job's result files."""
    if os.path.isdir(job):
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(job) for f in names if f.endswith(".json"))
    elif os.path.isfile(job):
        files = [job]
    else:
        raise FileNotFoundError(f"job {job!r} is neither a results file nor a folder")
    runs = []
    for path in files:
        try:
            with open(path) as f:
                results = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a train_cifar.py results file: {error}") from None
        if not isinstance(results, dict) or not isinstance(results.get("models"), dict) or "recipe" not in results:
            if os.path.isfile(job):
                raise ValueError(f"{path} is not a train_cifar.py results file (no 'models' and 'recipe')")
            continue                      # other JSON in a job folder (search results, ...)
        recipe = {k: results["recipe"].get(k, RECIPE_DEFAULTS.get(k)) for k in RECIPE_KEYS}
        for name, run in results["models"].items():
            history = run.get("history", [])
            diverged = run.get("diverged_at_epoch")
            if diverged is None and "diverged_at_epoch" not in run:
                diverged = next((i + 1 for i in range(len(history)) if diverging(history[:i + 1])), None)
            runs.append({"model": name, "seed": results["recipe"]["seed"], "recipe": recipe, "file": path,
                         "accuracy": 100 * run["test_accuracy"], "diverged_at_epoch": diverged})
    return runs


def pair(jobs: List[str], original: str, ours: str, exclude_diverged: bool = False) -> List[dict]:
    """One summary per recipe: the pairs (seed, job, accuracies, difference) and their statistics."""
    by_recipe: Dict[str, dict] = {}
    for job in jobs:
        cells: Dict[tuple, dict] = {}
        for run in job_runs(job):
            if run["model"] not in (original, ours):
                continue
            key = (json.dumps(run["recipe"], sort_keys=True), run["seed"], run["model"])
            if key in cells:
                raise ValueError(f"job {job}: {run['model']} seed {run['seed']} appears twice with one recipe "
                                 f"({cells[key]['file']}, {run['file']}); give each job its own folder")
            cells[key] = run
        for (recipe, seed, model), run in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if model != original or (recipe, seed, ours) not in cells:
                continue
            theirs = cells[(recipe, seed, ours)]
            summary = by_recipe.setdefault(recipe, {"recipe": json.loads(recipe), "pairs": [], "excluded": []})
            entry = {"seed": seed, "job": job, "original": run["accuracy"], "ours": theirs["accuracy"],
                     "difference": theirs["accuracy"] - run["accuracy"],
                     "diverged": [m for m, r in ((original, run), (ours, theirs)) if r["diverged_at_epoch"]]}
            (summary["excluded"] if exclude_diverged and entry["diverged"] else summary["pairs"]).append(entry)
    if not by_recipe:
        raise ValueError(f"no seed has both {original!r} and {ours!r} in one job with one recipe")
    for summary in by_recipe.values():
        differences = [p["difference"] for p in summary["pairs"]]
        summary["mean_difference"], summary["interval_95"] = t_interval(differences) if differences else (None,
                                                                                                          None)
        if differences:
            summary["original_mean"] = statistics.mean(p["original"] for p in summary["pairs"])
            summary["ours_mean"] = statistics.mean(p["ours"] for p in summary["pairs"])
    return list(by_recipe.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("jobs", nargs="+", metavar="JOB", help="a train_cifar.json, or a folder of them (one job)")
    parser.add_argument("--original", required=True, help="the original's model name (its file name)")
    parser.add_argument("--ours", required=True, help="the searched network's model name")
    parser.add_argument("--exclude-diverged", action="store_true", help="leave out pairs with a diverged run")
    parser.add_argument("--json", help="also write the summaries here")
    args = parser.parse_args(argv)
    try:
        summaries = pair(args.jobs, args.original, args.ours, args.exclude_diverged)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    for s in summaries:
        print("recipe: " + ", ".join(f"{k} {v}" for k, v in s["recipe"].items()))
        print(f"  {'seed':>4}  {args.original:>12}  {args.ours:>12}  {'difference':>10}  job")
        for p in s["pairs"] + s["excluded"]:
            mark = (" (excluded)" if p in s["excluded"] else "") + (
                f"  diverged: {', '.join(p['diverged'])}" if p["diverged"] else "")
            print(f"  {p['seed']:>4}  {p['original']:>12.2f}  {p['ours']:>12.2f}  {p['difference']:>+10.2f}  "
                  f"{p['job']}{mark}")
        if s["pairs"]:
            interval = ("" if s["interval_95"] is None else
                        f"; 95% interval {s['interval_95'][0]:+.2f} to {s['interval_95'][1]:+.2f}")
            print(f"  {len(s['pairs'])} pairs: ours {s['ours_mean']:.2f} vs original {s['original_mean']:.2f}, "
                  f"mean difference {s['mean_difference']:+.2f}{interval}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summaries, f, indent=1)
    return summaries


if __name__ == "__main__":
    main()
