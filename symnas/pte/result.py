"""What ``sn.pte.search`` returns: the transformed network, its figures and its legality record.

``result.network`` is a symbolic network (``.build((3, 32, 32))`` gives the torch model to
train; ``sn.nn.compile_network`` the fast one); ``result.speedup`` the measured whole-network
speedup at batch 1; ``result.legality`` how the network was judged legal. ``result.save(path)``
writes it all as JSON; ``sn.pte.load(path)`` reads it back without running anything from the file.

Example::

    result = sn.pte.search(sn.nn.resnet18(), data=sn.data.CIFAR10(), target_speedup=3)
    print(result)                       # speedup, params, legality in a few lines
    result.save("resnet18_3x.json")
    again = sn.pte.load("resnet18_3x.json")
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional

import pyglove as pg

__all__ = ["LegalityRecord", "PTEResult", "load"]


@dataclasses.dataclass
class LegalityRecord:
    """How the network was judged: by the search (layers scored alone) and exactly (as a whole)."""
    mode: str                          # "per_layer" | "network"
    proxy: str
    legal: bool                        # by the exact check in ``mode``
    original_score: float              # the network's proxy score, exact (sum over layers)
    candidate_score: float
    exact: Dict[str, Dict[str, Any]]   # mode -> the exact check's metrics and failing layers
    candidates_rejected: int = 0       # search candidates judged illegal
    candidates: int = 0
    layer_transformations_scored: int = 0
    layer_transformations_illegal: int = 0
    screened: List[bool] = dataclasses.field(default_factory=list)   # the shortlist's exact verdicts
    chosen_from: str = ""
    moves: List[str] = dataclasses.field(default_factory=list)       # repairs: "layer: from -> to"
    repair_rounds: int = 0
    fill_upgrades: List[str] = dataclasses.field(default_factory=list)
    fill_checks: int = 0

    @property
    def rejection_rate(self) -> float:
        return self.candidates_rejected / max(self.candidates, 1)


class PTEResult:
    """A transformed network with its measurements (see the module docstring)."""

    def __init__(self, network, original, choice: Dict[str, Any], programs: Dict[str, Dict[str, list]],
                 kernel_ms: Dict[str, float], params: Dict[str, int], legality: LegalityRecord,
                 search: Dict[str, Any], timings_ms: Optional[Dict[str, Any]] = None, layers: Optional[list] = None,
                 study=None):
        self.network, self.original, self.choice = network, original, choice
        self.programs = programs           # "original" / "ours" / "nas_only": conv path -> program steps
        self.kernel_ms, self.params, self.legality, self.search = kernel_ms, params, legality, search
        # whole networks, batch 1, ms (min over rounds): "original" / "ours" / "nas_only" compiled (every
        # conv a TVM kernel), "<label>_torch" eager, "<label>_jit" torch.jit.optimize_for_inference
        self.timings_ms = timings_ms or {}
        self.layers = layers or []          # per searched layer: shape, latencies, neural steps, scores
        self.study = study                  # the search's trials (not saved)

    @property
    def speedup(self) -> Optional[float]:
        """Whole-network speedup over the fastest original measured (batch 1, compiled on the flat
        plan with kernels timed cold); None before ``measure``."""
        originals = [v for k, v in self.timings_ms.items() if k == "original" or k.startswith("original_")]
        if not originals or "ours" not in self.timings_ms:
            return None
        return min(originals) / self.timings_ms["ours"]

    @property
    def kernel_speedup(self) -> float:
        """The original's kernel sum over ours (the search's own estimate of the speedup)."""
        return self.kernel_ms["original"] / self.kernel_ms["ours"]

    def measure(self, rounds: int = 5, baselines=("torch",), seed: int = 0) -> Dict[str, Any]:
        """Times the original and ours compiled (and ``baselines``: "torch" eager, "jit"
        (torch.jit.optimize_for_inference), "nas_only" (group by 2 everywhere, compiled)) in one
        process, ``rounds`` interleaved rounds; fills ``timings_ms`` and returns the details."""
        from symnas.pte.timing import compare_networks  # pylint: disable=import-outside-toplevel
        networks = {"original": self.original, "ours": self.network}
        if "nas_only" in baselines:
            networks["nas_only"] = self.nas_only_network()
        details = compare_networks(networks, self.programs, rounds=rounds, baselines=baselines, seed=seed)
        self.timings_ms = {k: min(v) for k, v in details["runs"].items()}
        return details

    def nas_only_network(self):
        """The NAS-only baseline: every searched conv grouped by 2 (no legality check)."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        sites = [s for s in snn.transformable_convs(self.original) if s.path in self.choice]
        return snn.replace_convs(self.original, {
            s.path: snn.Conv(s.out_shape[0], s.layer.kernel, stride=s.layer.stride, groups=2 * s.layer.groups,
                             padding=s.layer.padding) for s in sites})

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> Dict[str, Any]:
        return {"network": pg.to_json(self.network), "original": pg.to_json(self.original),
                "programs": {k: {p: pg.to_json(v) for p, v in d.items()} for k, d in self.programs.items()},
                "choice": {p: [pg.to_json(n), pg.to_json(pr)] for p, (n, pr) in self.choice.items()},
                "speedup": self.speedup, "kernel_ms": self.kernel_ms, "timings_ms": self.timings_ms,
                "params": self.params, "legality": dataclasses.asdict(self.legality), "search": self.search,
                "layers": self.layers}

    def save(self, path: str) -> None:
        """Writes the result as JSON (the networks as PyGlove JSON)."""
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1, default=str)

    def __repr__(self) -> str:
        speed = f"{self.speedup:.2f}x measured" if self.speedup else "not measured"
        legal = self.legality
        return (f"PTEResult(speedup {speed}, kernels {self.kernel_speedup:.2f}x; params "
                f"{self.params['ours'] / 1e6:.2f}M of {self.params['original'] / 1e6:.2f}M; "
                f"{legal.mode} {legal.proxy} {'legal' if legal.legal else 'ILLEGAL'} "
                f"({legal.candidate_score:.4g} vs {legal.original_score:.4g}))")


def load(path: str) -> PTEResult:
    """A result saved by ``PTEResult.save`` (symbolic values built without running code from the file)."""
    from symnas.safe_json import from_json  # pylint: disable=import-outside-toplevel
    try:
        with open(path) as f:
            saved = json.load(f)     # plain JSON; the networks and steps in it go through the safe loader
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a result saved by sn.pte ({e})") from e
    try:
        value = lambda v: from_json(json.dumps(v), source=path)  # noqa: E731
        legality = LegalityRecord(**saved["legality"])
        return PTEResult(value(saved["network"]), value(saved["original"]),
                         {p: (list(value(n)), list(value(pr))) for p, (n, pr) in saved["choice"].items()},
                         {k: {p: list(value(v)) for p, v in d.items()} for k, d in saved["programs"].items()},
                         saved["kernel_ms"], saved["params"], legality, saved["search"], saved.get("timings_ms"),
                         saved.get("layers"))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a result saved by sn.pte ({type(e).__name__}: {e})") from e
