"""Canvas's micro-DAG random sampler (seed 003 §6.1) as a search algorithm."""
import collections
import gc
import multiprocessing
import queue
import random
import re
from typing import Optional

import pyglove as pg

from symnas.algorithms._decisions import DecisionAlgorithm

__all__ = ["Canvas"]


@pg.members([
    ("seed", pg.typing.Int().noneable(), "Random seed; None draws from the OS."),
    ("max_attempts", pg.typing.Int(min_value=1, default=20000), "Samples tried per proposal before giving up."),
    ("dedup", pg.typing.Bool(default=True), "Never propose a kernel structurally equal to an earlier one."),
    ("max_backtracks", pg.typing.Int(min_value=0, default=2),
     "Re-draws of an earlier step when a step has no legal application (0: discard the sample, as Canvas)."),
    ("workers", pg.typing.Int(min_value=1, default=1),
     "Processes drawing samples (forked; >1: proposals arrive in the order the workers finish them)."),
])
class Canvas(DecisionAlgorithm):
    """Canvas's random sampler over a ``sn.kas.KernelSpace``: only valid, distinct, solved kernels.

    Each sample draws a primitive count, a width limit, G and an expected number of weighted
    primitives; at every step it takes, with that expected share's probability, a weighted kind
    (FC, Conv, Mix, Scale) or else an unweighted one, each kind with equal probability whatever
    its number of applications (per-type rescaling), then one of the kind's legal applications.
    Samples that cannot close or solve, or whose structure was proposed before (hash dedup), are
    discarded here, so every proposal decodes to a new kernel within the budget. Decisions of the
    space outside kernel designs are drawn uniformly. ``rejections`` counts why samples were
    discarded.

    With ``workers`` > 1, that many forked processes draw samples, each from its own seed stream,
    and this process keeps the proposals distinct across them: several times the proposals per
    second on as many free cores, but a seeded run is no longer repeatable (the order depends on
    which worker finishes first), and where fork is unavailable it samples in this process. The forked
    children run only the sampler's Python code, never torch or TVM.

    Example::

        import pyglove as pg, symnas as sn
        space = sn.kas.KernelSpace(targets=sn.kas.conv_targets(sn.nn.resnet18()),
                                   budget=sn.kas.Budget(flops=0.25), max_primitives=10)
        for design, feedback in pg.sample(space.search_space(), sn.algorithms.Canvas(seed=0), num_examples=5):
            feedback(-design.decode().flops_ratio)
    """

    def _init_state(self):
        from symnas.kas.primitives import WEIGHTED_KINDS  # pylint: disable=import-outside-toplevel
        self._rng = random.Random(self.seed)
        self._weighted_kinds = set(WEIGHTED_KINDS)
        self._designs = find_designs(self._space)
        if not self._designs:
            raise ValueError("Canvas samples kernel designs: the search space holds no "
                             "sn.kas.KernelSpace(...).search_space()")
        self._seen = set()
        self.rejections = collections.Counter()
        self.samples = 0
        self.backtracks = 0
        self.last_decoded = None     # the Decoded kernel of the latest proposal (saves decoding it again)
        self._workers = None         # the sampling processes (workers > 1), started by the first proposal

    def _state(self):   # the structures already proposed, so a resumed Canvas does not propose them again
        return {**super()._state(), "seen": sorted(self._seen)}

    def _load_state(self, state):
        super()._load_state(state)
        self._seen = set(state.get("seen", ()))

    def _propose_values(self):
        if self.workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            values = self._values_from_workers()
        else:
            values = self._draw_values()
        rng = self._rng
        return self._space.assemble(values, lambda slot, banned: self._space.uniform_choice(slot, banned, rng),
                                    lambda dec: dec.from_unit(rng.random()))

    def _draw_values(self, hashes: Optional[list] = None) -> list:
        """One drawn assignment of every kernel design (each kernel's structural hash appended to ``hashes``)."""
        values = [None] * self._space.num_decisions
        # The sampler allocates many small objects and keeps large caches (shape inference, sizes):
        # the cyclic garbage collector's passes over those caches cost a sixth to a fifth of the time; the
        # sampler keeps no reference cycles, so it is paused while the kernels are drawn.
        paused = gc.isenabled()
        gc.disable()
        try:
            for design in self._designs:
                self._sample_into(design, values)
                if hashes is not None:
                    hashes.append(self.last_decoded.hash)
        finally:
            if paused:
                gc.enable()
        return values

    def _values_from_workers(self) -> list:
        """The next drawn assignment whose kernels no earlier proposal had, from the worker processes."""
        if self._workers is None:
            self._start_workers()
        while True:
            try:
                item = self._results.get(timeout=5.0)
            except queue.Empty:
                if not any(p.is_alive() for p in self._workers):
                    self._workers = None
                    raise RuntimeError("Canvas: every sampling worker process has ended") from None
                continue
            if item[0] == "error":
                self.close()
                raise RuntimeError(item[1])
            values, hashes, decoded, samples, backtracks, rejections = item
            self.samples += samples
            self.backtracks += backtracks
            self.rejections.update(rejections)
            if self.dedup and any(h in self._seen for h in hashes):
                self.rejections["duplicate structure"] += 1     # drawn by two workers
                continue
            self._seen.update(hashes)
            self.last_decoded = decoded
            return values

    def _start_workers(self) -> None:
        context = multiprocessing.get_context("fork")
        self._results = context.Queue(maxsize=2 * self.workers)
        base = self._rng.getrandbits(64) if self.seed is not None else None
        self._workers = []
        for i in range(self.workers):
            process = context.Process(target=self._work, args=(None if base is None else base + i,), daemon=True)
            process.start()
            self._workers.append(process)

    def _work(self, seed) -> None:
        """A worker process: draws assignments for ever (a daemon: it ends with its parent, or ``close``)."""
        self._rng = random.Random(seed)
        while True:
            samples, backtracks = self.samples, self.backtracks
            self.rejections.clear()
            hashes = []
            try:
                values = self._draw_values(hashes)
            except Exception as error:  # pylint: disable=broad-except
                self._results.put(("error", str(error)))     # (no valid kernel left to find, ...)
                return
            self._results.put((values, hashes, self.last_decoded, self.samples - samples,
                               self.backtracks - backtracks, dict(self.rejections)))

    def close(self) -> None:
        """Stops the worker processes (``workers`` > 1); a later proposal starts new ones."""
        for process in getattr(self, "_workers", None) or ():   # (also before setup)
            process.terminate()
            process.join()
        self._workers = None

    def _sample_into(self, d, values) -> None:
        from symnas.kas.kernel import KernelRejected  # pylint: disable=import-outside-toplevel
        from symnas.kas.space import Builder  # pylint: disable=import-outside-toplevel
        space, rng = d["space"], self._rng
        o = space.options()
        kinds = o.kinds
        weighted = [k for k in kinds if k in self._weighted_kinds]
        free = [k for k in kinds if k not in self._weighted_kinds]
        groups = o.group_values
        lo, hi, lo_w, hi_w = o.sizes
        lo_k, hi_k = max(o.min_weighted, 1), max(o.max_weighted, 1)
        shuffle, random_ = _shuffler(rng), rng.random
        seen, dedup, rejections = self._seen, self.dedup, self.rejections
        max_backtracks = self.max_backtracks
        samples = 0
        try:
            for _ in range(self.max_attempts):
                samples += 1
                n = rng.randint(lo, hi)
                width = rng.randint(lo_w, hi_w)
                g = groups[int(random_() * len(groups))]
                expected = min(rng.randint(lo_k, hi_k), n)
                if expected > o.max_weighted_ratio * n:
                    rejections["too many weighted primitives expected"] += 1
                    continue
                share = expected / n

                def order(t):
                    a, b = list(weighted), list(free)
                    shuffle(a)
                    shuffle(b)
                    return a + b if random_() < share else b + a

                try:
                    builder = self._grow(Builder(o, n, width, g), order, max_backtracks)
                    decoded = builder.finish()
                except KernelRejected as e:
                    rejections[_reason(str(e))] += 1
                    continue
                if dedup and decoded.hash in seen:
                    rejections["duplicate structure"] += 1
                    continue
                seen.add(decoded.hash)
                self.last_decoded = decoded
                values[d["num_primitives"]] = n - lo
                values[d["max_width"]] = width - lo_w
                values[d["groups"]] = groups.index(g)
                for t, (kind, u) in enumerate(builder.record):
                    values[d["kind"][t]] = kinds.index(kind)
                    values[d["pick"][t]] = u
                for t in range(n, hi):
                    values[d["kind"][t]] = int(random_() * len(kinds))
                    values[d["pick"][t]] = random_()
                return
        finally:
            self.samples += samples
        top = ", ".join(f"{k} ({v})" for k, v in self.rejections.most_common(3))
        raise RuntimeError(f"Canvas: no new valid kernel in {self.max_attempts} samples; most frequent "
                           f"reasons: {top}")

    def _grow(self, builder, order, max_backtracks):
        """Places every primitive; a step with no legal application re-draws the step before it
        (at most ``max_backtracks`` times in all) rather than discarding the whole sample."""
        from symnas.kas.kernel import KernelRejected  # pylint: disable=import-outside-toplevel
        random_, n = self._rng.random, builder.n
        pick = lambda _, kind: random_()      # noqa: E731
        snapshots = [builder.clone()]
        t, backtracks = 0, 0
        while t < n:
            try:
                builder.step(t, order(t), pick)
            except KernelRejected:
                if backtracks >= max_backtracks or t == 0:
                    raise
                backtracks += 1
                self.backtracks += 1
                t -= 1
                del snapshots[t + 1:]
                builder = snapshots[t].clone()
                continue
            t += 1
            snapshots.append(builder.clone())
        return builder


def _fisher_yates(getrandbits):
    """A shuffle drawing from ``getrandbits`` as CPython's ``Random.shuffle`` does (``_randbelow``)."""
    def shuffle(x: list) -> None:
        for i in range(len(x) - 1, 0, -1):
            m = i + 1
            k = m.bit_length()
            j = getrandbits(k)
            while j >= m:
                j = getrandbits(k)
            x[i], x[j] = x[j], x[i]
    return shuffle


def _shuffler(rng: random.Random):
    """``rng.shuffle`` without its per-element method calls, drawing the same numbers in the same
    order, so a seeded Canvas samples the same kernels; ``rng.shuffle`` itself where a check on
    scratch generators (made once) finds that the two differ (another Python's ``random``)."""
    global _FAST_SHUFFLE_OK  # pylint: disable=global-statement
    if _FAST_SHUFFLE_OK is None:
        a, b = random.Random(12345), random.Random(12345)
        fast = _fisher_yates(b.getrandbits)
        _FAST_SHUFFLE_OK = True
        for size in (2, 3, 4, 5, 9, 13, 17):
            x, y = list(range(size)), list(range(size))
            a.shuffle(x)
            fast(y)
            _FAST_SHUFFLE_OK = _FAST_SHUFFLE_OK and x == y
    return _fisher_yates(rng.getrandbits) if _FAST_SHUFFLE_OK else rng.shuffle


_FAST_SHUFFLE_OK = None


def find_designs(space):
    """The kernel designs of a DecisionSpace: decision indices by role, grouped by their path prefix."""
    from symnas.kas.space import KAS_HINT as hint  # pylint: disable=import-outside-toplevel
    designs = {}
    for dec in space.decisions:
        hints = getattr(dec.spec, "hints", None)
        if not (isinstance(hints, tuple) and hints and hints[0] == hint):
            continue
        role = hints[1]
        name = dec.name
        suffix = role if role in ("num_primitives", "max_width", "groups") else f"{role}s[{hints[2]}]"
        prefix = name[:-len(suffix)] if name.endswith(suffix) else name
        d = designs.setdefault(prefix, {"kind": {}, "pick": {}})
        if role in ("kind", "pick"):
            d[role][hints[2]] = dec.index
        else:
            d[role] = dec.index
            if role == "num_primitives":
                d["space"] = hints[2]
    return [d for d in designs.values() if "space" in d]


def _reason(message: str) -> str:
    """A rejection message without its numbers and shapes, for counting."""
    message = re.sub(r"\[[^\]]*\]", "[..]", message)
    message = re.sub(r"\d+", "#", message)
    return message.split(" (")[0][:90]
