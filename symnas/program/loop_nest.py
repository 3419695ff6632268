"""Named loops of one compute block, tracked through program steps.

Loop names follow the steps: ``Split("co", 4)`` turns ``co`` into ``co.0`` (outer)
and ``co.1`` (inner, extent 4); ``Fuse(["co.0", "oh"])`` makes ``co.0*oh``.
Without a TVM schedule (``sch=None``) only the names are tracked; the neural
steps use that to find "the outermost loop" at their position in a sequence.
"""
from typing import Dict, List, Optional


class StepError(Exception):
    """A step cannot apply; the schedule turns it into IllegalTransformation."""


class LoopNest:
    """Loop names in nest order, with their TVM loop handles when scheduling."""

    def __init__(self, order: List[str], sch=None, block=None, target_kind: str = "llvm"):
        self.order = list(order)
        self.sch = sch
        self.block = block
        self.target_kind = target_kind
        self.rvs: Dict[str, object] = {}
        self.thread_extents: Dict[str, int] = {}   # GPU thread axis -> extent of the loop bound to it
        if sch is not None:
            loops = sch.get_loops(block)
            names = [sch.get(loop).loop_var.name for loop in loops]
            if names != self.order:
                raise StepError(f"loop nest {names} does not match the expected {self.order}")
            self.rvs = dict(zip(names, loops))

    @property
    def scheduling(self) -> bool:
        return self.sch is not None

    def check(self, name: str) -> str:
        if not isinstance(name, str):
            raise StepError(f"loop name must be a string, got {name!r}")
        if name not in self.order:
            raise StepError(f"no loop named {name!r}; the loops are {self.order}")
        return name

    def rv(self, name: str):
        return self.rvs[self.check(name)]

    def extent(self, name: str) -> Optional[int]:
        if not self.scheduling:
            return None
        extent = self.sch.get(self.rv(name)).extent
        return int(extent) if hasattr(extent, "value") or isinstance(extent, int) else None

    def replace(self, name: str, new_names: List[str], new_rvs=None) -> None:
        index = self.order.index(name)
        self.order[index:index + 1] = new_names
        if self.scheduling:
            del self.rvs[name]
            self.rvs.update(zip(new_names, new_rvs))

    def permute(self, names: List[str]) -> None:
        """Places `names` in the given order into the positions they occupy."""
        positions = sorted(self.order.index(n) for n in names)
        for position, name in zip(positions, names):
            self.order[position] = name

    def outermost(self) -> str:
        """The outermost loop other than the batch loop."""
        for name in self.order:
            if name != "n":
                return name
        raise StepError("the nest has no loop besides the batch loop")
