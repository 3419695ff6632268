"""The exact legality check of whole candidate networks, shared by screening, repair and budget fill.

The search judges candidates from layers scored one at a time; the network it picks is then
checked exactly: built whole, scored on the same minibatch and seed, and compared with the
original. A *choice* is what every searched layer runs: ``{path: (neural steps, program steps)}``.

Example::

    exact = sn.pte.ExactCheck(network, menu, x, y, sn.proxies.LegalityCheck(mode="network"))
    verdict = exact.check({path: ([sn.program.Group(2)], program) for ...})
    print(verdict.legal, verdict.reason)
"""
from __future__ import annotations

import ctypes
import gc
from typing import Dict, Tuple

__all__ = ["ExactCheck", "Choice", "release_memory"]

Choice = Dict[str, Tuple[list, list]]


def release_memory() -> None:
    """Collects garbage and hands freed heap back to the OS (whole-network proxy passes on
    DenseNet-161 at batch 128 otherwise leave ~1.5 GB each in glibc's arenas)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ExactCheck:
    """Whole-network legality of choices against ``network`` on one batch (original scores once)."""

    def __init__(self, network, menu, inputs, targets, legality):
        self.network, self.menu, self.inputs, self.targets = network, menu, inputs, targets
        self.legality = legality
        self.original_scores = legality.layer_scores(network, inputs, targets)
        self.checks = 0
        self._paths = {s.torch_name: s.path for s in menu.sites}

    @property
    def mode(self) -> str:
        return self.legality.mode

    def network_of(self, choice: Choice):
        """The symbolic network that ``choice`` describes (layers without neural steps stay original)."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        from symnas import program as P  # pylint: disable=import-outside-toplevel
        site = self.menu.site
        return snn.replace_convs(self.network, {p: P.Schedule(site[p].operator(), n + pr)
                                                for p, (n, pr) in choice.items() if n})

    def check(self, choice: Choice):
        """The exact verdict (``sn.proxies.LegalityResult``) of the network ``choice`` describes."""
        verdict = self.legality.check(self.network, self.network_of(choice), self.inputs, self.targets,
                                      original_scores=self.original_scores)
        self.checks += 1
        release_memory()
        return verdict

    def path_of(self, torch_name: str):
        """The key path of the searched layer called ``torch_name`` (None for other layers)."""
        return self._paths.get(torch_name)
