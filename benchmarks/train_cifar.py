"""Train saved torch models on CIFAR-10 with one identical recipe and report test accuracy.

The models are the original and the transformed backbone exported by
``benchmarks/nas_pte.py --export DIR``: symbolic networks as JSON (built here with the
seed, so the transformed kernels' torch modules are trained as they are) or
``torch.save``d modules. On a GPU machine without symnas' other dependencies the
classes are imported from this checkout's files directly (pyglove must be installed).

Recipe (the same for every model): SGD (momentum 0.9, Nesterov, weight decay 5e-4),
batch 512, one-cycle LR with peak 0.2 (scaled for batch 512), random crop (pad 4) and
horizontal flip, bf16 autocast, channels_last, data resident on the GPU; each layer's initial
weights drawn from the seed and the layer's name (``--init by-name``), so layers the search left
alone start identical in the original and the transformed network.
``--compile`` runs the same steps through ``torch.compile`` (faster on the GPU; recorded in the recipe).
Longer runs want ``--clip-grad 2``: at 30 epochs the recipe without it diverged at the peak
learning rate in 4 of 8 runs of the original ResNet-34 (each epoch's median and largest gradient
norm are in the results, and the clipped steps when clipping).

Usage::

    python benchmarks/train_cifar.py --models carry/models/resnet34_original.pt carry/models/resnet34_ours.pt \
        --data carry/cifar10_jpeg.npz --epochs 15 --out $OUT
    python benchmarks/train_cifar.py --models ... --epochs 1 --limit 1024    # CPU smoke test
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import io
import json
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255
STD = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255


def make_classes_importable() -> None:
    """Lets ``torch.load`` find symnas' module classes even where ``import symnas`` fails (no pandas...)."""
    try:
        import symnas.nn.layers  # noqa: F401
        import symnas.program.torch_module  # noqa: F401
        return
    except ImportError as e:
        print(f"import symnas failed ({e}); importing its torch modules from {ROOT} directly", flush=True)
        for name in [n for n in sys.modules if n == "symnas" or n.startswith("symnas.")]:
            del sys.modules[name]
    for name in ("symnas", "symnas.nn", "symnas.program"):
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(ROOT, *name.split("."))]
        sys.modules[name] = module


def load_model(path: str, seed: int, init: str = "by-name") -> torch.nn.Module:
    """A ``torch.save``d module (``.pt``), or a symbolic network (``.json``, pg.to_json_str) built with ``seed``.

    ``init="by-name"`` then redraws every layer's weights from a generator seeded by ``seed`` and the
    layer's name (``sn.nn.init_by_name``), so the original and a transformed network start with the
    same weights in every layer they share; ``"build-order"`` keeps the weights drawn while building.
    """
    if init not in ("by-name", "build-order"):
        raise ValueError(f"unknown init {init!r}: use 'by-name' or 'build-order'")
    if path.endswith(".json"):
        # registers the symbolic classes (explicit modules: the packages may be stubs), then reads
        # the file with symnas's safe loader (JSON only: nothing in the file runs)
        for module in ("symnas.nn.layers", "symnas.nn.backbones", "symnas.program.operators",
                       "symnas.program.transformations", "symnas.program.neural", "symnas.program.schedule"):
            importlib.import_module(module)
        net = importlib.import_module("symnas.safe_json").load(path)
        torch.manual_seed(seed)
        model = net.build((3, 32, 32))
    else:
        model = torch.load(path, weights_only=False, map_location="cpu")
    if init == "by-name":
        importlib.import_module("symnas.nn.init").init_by_name(model, seed)
    return model


def decode(raw: bytes, offsets: np.ndarray, limit: int) -> np.ndarray:
    from PIL import Image
    n = min(len(offsets) - 1, limit)
    return np.stack([np.asarray(Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])).convert("RGB"))
                     for i in range(n)])


def load_cifar(path: str, limit: int, device):
    data = np.load(path)
    out = []
    for split in ("train", "test"):
        x = decode(data[f"{split}_jpeg"].tobytes(), data[f"{split}_offsets"], limit).astype(np.float32) / 255
        x = torch.from_numpy(((x - MEAN) / STD).transpose(0, 3, 1, 2).copy())
        y = torch.from_numpy(data[f"y_{split}"][:len(x)].astype(np.int64))
        out += [x.to(device), y.to(device)]
    return out


def augment(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    i = torch.randint(0, 9, (n,), device=x.device)
    j = torch.randint(0, 9, (n,), device=x.device)
    rows = (i[:, None] + torch.arange(32, device=x.device)[None])            # n x 32
    cols = (j[:, None] + torch.arange(32, device=x.device)[None])
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(3, device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, device=x.device) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model, x, y, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        for k in range(0, len(x), batch):
            xb = x[k:k + batch].contiguous(memory_format=torch.channels_last)
            correct += int((model(xb).argmax(1) == y[k:k + batch]).sum())
    return correct / len(x)


def diverging(history) -> bool:
    """Whether the last epoch's training loss is not finite or rose to 1.3x the lowest before it
    (and above 0.5): the jump back towards chance of a run that diverged at its peak learning rate."""
    if not history:
        return False
    loss = history[-1]["loss"]
    if not np.isfinite(loss):
        return True
    best = min((e["loss"] for e in history[:-1]), default=loss)
    return loss > 1.3 * best and loss > 0.5


def train(model, data, epochs: int, batch: int, lr: float, seed: int, log, time_limit: float = 0,
          clip_grad: float = 0, compile: bool = False) -> dict:
    xtr, ytr, xte, yte = data
    device = xtr.device
    torch.manual_seed(seed)
    model = model.to(device).to(memory_format=torch.channels_last)
    # the same parameters, run through torch.compile's fused kernels (the first step and the first
    # evaluation compile); the optimiser and the results see ``model``
    run = torch.compile(model) if compile else model
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps = epochs * (len(xtr) // batch)
    if steps < 8:
        raise ValueError(f"the one-cycle schedule needs at least 8 steps, got {steps} "
                         f"({epochs} epochs of {len(xtr)} images in batches of {batch}): "
                         "use more epochs or images, or a smaller batch")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25,
                                                div_factor=10, final_div_factor=100)
    history, start, diverged = [], time.time(), None
    for epoch in range(epochs):
        run.train()
        perm = torch.randperm(len(xtr), device=device)
        total, count = 0.0, 0
        norms = []  # the gradient norm of every step, kept on the device (no sync per step)
        for k in range(0, len(xtr) - batch + 1, batch):
            idx = perm[k:k + batch]
            xb = augment(xtr[idx]).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(run(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad if clip_grad > 0 else
                                                        float("inf")))
            opt.step()
            sched.step()
            total += float(loss.detach()) if k % (20 * batch) == 0 else 0.0
            count += 1 if k % (20 * batch) == 0 else 0
        norms = torch.stack(norms).float()
        entry = {"epoch": epoch + 1, "loss": total / max(count, 1), "seconds": time.time() - start,
                 "grad_norm_median": float(norms.median()), "grad_norm_max": float(norms.max())}
        if clip_grad > 0:
            entry["clipped_steps"] = int((norms > clip_grad).sum())
        if epoch + 1 == epochs or (epoch + 1) % 5 == 0:
            entry["test_accuracy"] = evaluate(run, xte, yte)
        history.append(entry)
        log(json.dumps(entry))
        if diverged is None and diverging(history):
            diverged = epoch + 1
            log(f"warning: the training loss rose from {min(e['loss'] for e in history[:-1]):.3f} to "
                f"{entry['loss']:.3f} at epoch {diverged}: this run diverged (try --clip-grad 2 or a lower --lr)")
        if time_limit and time.time() - start > time_limit:
            log(f"stopping after epoch {epoch + 1}: time limit {time_limit} s")
            entry.setdefault("test_accuracy", evaluate(run, xte, yte))
            break
    return {"test_accuracy": history[-1]["test_accuracy"], "epochs_run": len(history),
            "diverged_at_epoch": diverged, "train_seconds": time.time() - start,
            "history": history, "params": sum(p.numel() for p in model.parameters())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", default=None, help="cifar10_jpeg.npz (default: $SYMNAS_DATA/cifar10/...)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=10 ** 9, help="use only this many images per split")
    parser.add_argument("--out", default=".")
    parser.add_argument("--init", choices=("by-name", "build-order"), default="by-name",
                        help="by-name: each layer's initial weights depend on the seed and its name only, "
                             "so layers the search left alone start identical in both networks")
    parser.add_argument("--clip-grad", type=float, default=0,
                        help="clip the gradient's norm to this value before each step (0: no clipping)")
    parser.add_argument("--compile", action="store_true",
                        help="train and evaluate through torch.compile (on the H200 a ResNeXt-29 step takes "
                             "24 instead of 34 ms; the transformed 3.45x network 43 instead of 56)")
    parser.add_argument("--time-limit", type=float, default=0, help="stop a model's training after this many s")
    args = parser.parse_args(argv)
    if args.clip_grad < 0:
        parser.error(f"--clip-grad must be >= 0 (0: no clipping), got {args.clip_grad}")
    if args.data is None:
        if not os.environ.get("SYMNAS_DATA"):
            parser.error("give --data path/to/cifar10_jpeg.npz or set SYMNAS_DATA to the data folder")
        args.data = os.path.join(os.environ["SYMNAS_DATA"], "cifar10", "cifar10_jpeg.npz")
    if not os.path.exists(args.data):
        parser.error(f"--data: {args.data} does not exist")
    make_classes_importable()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    t0 = time.time()
    data = load_cifar(args.data, args.limit, device)
    print(f"data: {len(data[0])} train / {len(data[2])} test images on {device} in {time.time() - t0:.1f} s",
          flush=True)
    results = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
               "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "recipe": {k: getattr(args, k)
                          for k in ("epochs", "batch", "lr", "seed", "init", "clip_grad", "compile")},
               "models": {}}
    os.makedirs(args.out, exist_ok=True)
    for path in args.models:
        name = os.path.splitext(os.path.basename(path))[0]
        model = load_model(path, args.seed, args.init)
        print(f"== {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
        results["models"][name] = train(model, data, args.epochs, args.batch, args.lr, args.seed,
                                        lambda s: print(f"  {name} {s}", flush=True), args.time_limit,
                                        args.clip_grad, args.compile)
        with open(os.path.join(args.out, "train_cifar.json"), "w") as f:
            json.dump(results, f, indent=1)
    for name, r in results["models"].items():
        print(f"{name}: test accuracy {100 * r['test_accuracy']:.2f}% ({r['params'] / 1e6:.2f}M params, "
              f"{r['train_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
