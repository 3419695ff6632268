"""Train saved networks on CIFAR-10 with one recipe (``sn.train.Trainer``) and report test accuracy.

The models are symbolic networks saved as JSON (``benchmarks/nas_pte.py --export DIR`` writes the
original and the transformed one). Every model and seed gets the same recipe: SGD (momentum 0.9,
Nesterov, weight decay 5e-4 on weights only), batch 512, one-cycle learning rate with peak 0.2,
reflection-padded random crop and horizontal flip, bf16 and channels-last on CUDA, every training
image used (test accuracy is measured once, at the end, and every 5 epochs for the log); each layer's
initial weights drawn from the seed and the layer's name (``--init by-name``), so the layers the
search left alone start identical in the original and the transformed network. ``--clip-grad 2``
keeps 30-epoch runs from diverging at the peak learning rate; ``--compile`` runs through
``torch.compile``. With two models and several seeds (``--seeds``) the runs are paired and the
mean difference with its 95% interval is printed; ``--workers N`` trains N runs at once.

Usage::

    python benchmarks/train_cifar.py --models models/resnet34_original.json models/resnet34_ours.json \\
        --epochs 30 --clip-grad 2 --seeds 0 1 --workers 4 --out runs/job1
    python benchmarks/train_cifar.py --models tiny.json --epochs 2 --batch 16 --limit 64   # CPU smoke run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

import torch

import symnas as sn   # installed (pip install -e .), or on a bare GPU machine: source benchmarks/gpu_env.sh

RECIPE_KEYS = ("epochs", "batch", "lr", "init", "clip_grad", "compile")


def load_network(path: str):
    """The symbolic network saved at ``path`` (JSON; nothing in the file is run)."""
    return sn.load(path)


def recipe(args, network, seed: int) -> sn.train.Trainer:
    """The one training recipe, for ``network`` and ``seed``."""
    return sn.train.Trainer(
        model=network, data=sn.data.CIFAR10(root=args.data), epochs=args.epochs, batch_size=args.batch,
        optimizer=sn.train.SGD(args.lr, momentum=0.9, nesterov=True), weight_decay=5e-4, decay_1d_params=False,
        schedule=sn.train.OneCycle(pct_start=0.25, div_factor=10, final_div_factor=100),
        augmentation=[sn.train.RandomCrop(4, padding_mode="reflect"), sn.train.HorizontalFlip()],
        clip_grad_norm=args.clip_grad, mixed_precision=True, channels_last=True, compile=args.compile,
        init="by_name" if args.init == "by-name" else "build", seed=seed, validation_size=0, drop_last=True,
        eval_every=5, train_size=args.limit, eval_size=args.limit)


def record(run: dict) -> dict:
    """A run as the results file keeps it (the keys ``paired_accuracy.py`` reads)."""
    return {"test_accuracy": run["accuracy"], "epochs_run": run["epochs"], "diverged_at_epoch": run["diverged_at_epoch"],
            "train_seconds": run["time_s"], "params": run["params"], "history": run["history"]}


def paired_record(paired, results: dict) -> dict:
    """The paired comparison as ``paired.json`` keeps it: per seed both accuracies (%) and the
    difference (second model - first), their mean and 95% interval."""
    first = results[min(results)]
    interval = paired.interval
    return {"date": first["date"], "device": first["device"], "recipe": {k: v for k, v in first["recipe"].items()
                                                                          if k != "seed"},
            "reference": paired.reference, "other": paired.other,
            "seeds": {str(seed): {**{n: round(100 * r[n]["accuracy"], 2) for n in (paired.reference, paired.other)},
                                  "train_seconds": {n: round(r[n]["time_s"], 1) for n in r}}
                      for seed, r in sorted(paired.runs.items())},
            "differences": [round(d, 2) for d in paired.differences],
            "mean_difference": round(paired.mean_difference, 3),
            "interval95": None if interval is None else [round(v, 3) for v in interval],
            "diverged": [list(d) for d in paired.diverged()]}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="symbolic networks saved as JSON")
    parser.add_argument("--data", default=None, help="cifar10_jpeg.npz (default: $SYMNAS_DATA/cifar10/...)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: paired runs")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--limit", type=int, default=None, help="use only this many images per split")
    parser.add_argument("--out", default=".")
    parser.add_argument("--init", choices=("by-name", "build-order"), default="by-name",
                        help="by-name: each layer's initial weights depend on the seed and its name only, "
                             "so layers the search left alone start identical in both networks")
    parser.add_argument("--clip-grad", type=float, default=0,
                        help="clip the gradient's norm to this value before each step (0: no clipping)")
    parser.add_argument("--compile", action="store_true", help="train and evaluate through torch.compile")
    args = parser.parse_args(argv)
    if args.clip_grad < 0:
        parser.error(f"--clip-grad must be >= 0 (0: no clipping), got {args.clip_grad}")
    if args.seed is not None and args.seeds is not None:
        parser.error("give --seed or --seeds, not both")
    args.seeds = args.seeds or [0 if args.seed is None else args.seed]
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.data is None:
        if not os.environ.get("SYMNAS_DATA"):
            parser.error("give --data path/to/cifar10_jpeg.npz or set SYMNAS_DATA to the data folder")
        args.data = os.path.join(os.environ["SYMNAS_DATA"], "cifar10", "cifar10_jpeg.npz")
    if not os.path.exists(args.data):
        parser.error(f"--data: {args.data} does not exist")
    missing = [m for m in args.models if not os.path.isfile(m)]
    if missing:
        parser.error(f"--models: {', '.join(missing)} not found")
    return args


def main(argv=None):
    args = parse(argv)
    names = [os.path.splitext(os.path.basename(p))[0] for p in args.models]
    networks = dict(zip(names, (load_network(p) for p in args.models)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sn.data.CIFAR10(root=args.data).load()      # decoded once here, read from the cache by every run
    trainers = {(seed, name): recipe(args, net, seed) for seed in args.seeds for name, net in networks.items()}
    for (seed, name), trainer in trainers.items():
        print(f"== {name} seed {seed}: {sn.nn.count_params(trainer.model.build((3, 32, 32))) / 1e6:.2f}M "
              f"parameters, {device}", flush=True)
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    results = {seed: {"date": date, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                      "recipe": {**{k: getattr(args, k) for k in RECIPE_KEYS}, "seed": seed}, "models": {}}
               for seed in args.seeds}
    os.makedirs(args.out, exist_ok=True)

    def save(key, run):     # each run as it ends: a run cut short by a time limit loses only itself
        seed, name = key
        results[seed]["models"][name] = record(run)
        if len(args.seeds) == 1:
            path, saved = os.path.join(args.out, "train_cifar.json"), results[seed]
        else:
            path, saved = os.path.join(args.out, f"{name}_s{seed}.json"), {**results[seed], "models": {name: record(run)}}
        with open(path, "w") as f:
            json.dump(saved, f, indent=1)
    runs = sn.train.train_all(trainers, workers=args.workers, log=True, on_done=save)
    for (seed, name), run in runs.items():
        print(f"{name}: test accuracy {100 * run['accuracy']:.2f}% (seed {seed}, {run['params'] / 1e6:.2f}M params, "
              f"{run['time_s']:.0f} s" + (f", diverged at epoch {run['diverged_at_epoch']}" if run["diverged_at_epoch"]
                                          else "") + ")")
    if len(names) == 2 and len(args.seeds) > 1:   # paired_accuracy.py pools such runs over jobs
        paired = sn.train.PairedResult({seed: {n: runs[(seed, n)] for n in names} for seed in args.seeds}, *names)
        print(paired.table())
        with open(os.path.join(args.out, "paired.json"), "w") as f:
            json.dump(paired_record(paired, results), f, indent=1)
    return results[args.seeds[0]] if len(args.seeds) == 1 else results


if __name__ == "__main__":
    main()
