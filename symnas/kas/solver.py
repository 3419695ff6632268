"""The two dynamic-variable solvers of seed 003 §6.2-6.3.

- Shape matching (:func:`close_output`, and each primitive's ``solutions``): when two branches
  meet or the output must be ``[O, H, W]``, a dynamic variable in a denominator is set to a factor
  of the other side (``x1 = x2 * KW``), so the DAG closes.
- Analytical budget (:func:`solve_budget`): the variables still free get, per target conv, a base
  value from the least common multiple of the denominators they meet (every size stays an integer),
  scaled with the target's channel count; then the variable whose doubling costs least is doubled,
  again and again, until no doubling fits the budget. No rejection loop: a kernel whose base sizes
  already exceed the budget is rejected once, with the figures.

Example::

    import symnas as sn
    P = sn.kas.primitives
    kernel = sn.kas.Kernel([P.Unfold("HW", 3), P.FC("x0"), P.Activation("relu"), P.FC("O")])
    targets = sn.kas.conv_targets(sn.nn.resnet18())
    solution = sn.kas.solve_budget(kernel.analyze(), targets, groups=1, budget=sn.kas.Budget(flops=0.25))
    print(solution.values, solution.flops / solution.baseline_flops)
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

from symnas.kas import shapes as S
from symnas.kas.kernel import Analysis, KernelRejected, Solution
from symnas.kas.sizes import Size, lcm
from symnas.kas.targets import Budget, ConvTarget, TargetData

__all__ = ["close_output", "closing", "solve_budget", "solve_sizes", "check_static", "target_env"]


def target_env(target, groups: int) -> Dict[str, int]:
    return {"C": target.c_in, "O": target.c_out, "H": target.h, "W": target.w, "S": target.stride, "G": groups}


_H, _W = Size.symbol("H"), Size.symbol("W")
_CLOSES = {"O": Size.symbol("O"), "C": Size.symbol("C")}


def closing(shape: S.Shape, out_channels: str = "O"):
    """False when ``shape`` cannot be the kernel output ``[out_channels, H, W]``; else None (it is)
    or the substitution ``(var, value)`` that makes it so."""
    if shape[S.D] is not None or shape[S.H] != _H or shape[S.W] != _W:
        return False
    want = _CLOSES[out_channels]
    have = S.channels(shape)
    if have == want:
        return None
    dyn = have.dynamic_vars()
    if len(dyn) == 1 and have.power_of(dyn[0]) == 1:
        return dyn[0], want / (have / Size.dynamic(dyn[0]))
    return False


def close_output(shape: S.Shape, out_channels: str = "O") -> Optional[Tuple[int, Size]]:
    """The substitution that makes ``shape`` the kernel output ``[out_channels, H, W]``: ``None`` when
    it already is, ``(var, value)`` when a dynamic variable can be solved for it; raises
    KernelRejected (with the shapes) when neither."""
    result = closing(shape, out_channels)
    if result is False:
        raise KernelRejected(f"the last node {S.text(shape)} cannot close to the output [{out_channels}, H, W] "
                             f"(channels {S.channels(shape)}, no free size to solve)")
    return result


def check_static(sizes: Sequence[Size], envs: Sequence[Dict[str, int]], keys: Sequence[str],
                 cache: Optional[dict] = None) -> Optional[str]:
    """The first reason a static size is not a positive integer for some target (None if all are);
    a size with a dynamic variable must hold exactly one, to the first power."""
    for size in sizes:
        if cache is not None and size in cache:
            if cache[size] is None:
                continue
            return cache[size]
        reason = None
        dyn = size.dynamic_vars()
        if dyn:
            if len(dyn) > 1 or size.power_of(dyn[0]) != 1:
                reason = f"size {size} holds more than one dynamic variable (or a power of one)"
        else:
            for env, key in zip(envs, keys):
                if not size.is_integer(env):
                    reason = f"size {size} is {size.value(env)} for the conv {key} (G={env['G']})"
                    break
        if cache is not None:
            cache[size] = reason
        if reason:
            return reason
    return None


class _Terms:
    """Cost monomials compiled for fast evaluation per target: sum of coef * prod(x_j ** p)."""

    def __init__(self, terms: Sequence[Size], envs, variables: List[int], statics: Optional[dict] = None):
        statics = {} if statics is None else statics
        position = {v: j for j, v in enumerate(variables)}
        self.compiled = []              # (coefficient per target, ((variable position, power), ...))
        for t in terms:
            coefs, dyn = _static_of(t, envs, statics)
            self.compiled.append((coefs, tuple((position[v], p) for v, p in dyn)))

    def value(self, i: int, x: Sequence[int]) -> float:
        total = 0.0
        for coefs, powers in self.compiled:
            coef = coefs[i]
            for j, p in powers:
                coef *= x[j] ** p
            total += coef
        return total


def _static_of(size: Size, envs, statics: dict) -> tuple:
    """(the size's value per env with its dynamic variables at 1, as floats; ((var, power), ...));
    ``statics`` remembers it per size (for one list of envs)."""
    hit = statics.get(size)
    if hit is None:
        hit = statics[size] = (tuple(float(size.static_value(env)) for env in envs),
                               tuple((v, size.power_of(v)) for v in size.dynamic_vars()))
    return hit


def _numel_of(shape: S.Shape, statics: dict) -> Size:
    """``S.numel(shape)``, remembered in ``statics`` (a shape's element count does not depend on the envs)."""
    key = ("numel", shape)
    hit = statics.get(key)
    if hit is None:
        hit = statics[key] = S.numel(shape)
    return hit


def _denominators_of(size: Size, envs, statics: dict) -> tuple:
    """The denominators of the size's static part per env (cached in ``statics`` under a key of its own)."""
    key = (size, "den")
    hit = statics.get(key)
    if hit is None:
        hit = statics[key] = tuple(size.static_value(env).denominator for env in envs)
    return hit


def solve_budget(analysis: Analysis, targets: Sequence[ConvTarget], groups: int, budget: Budget,
                 max_tensor_ratio: float = 64.0) -> Solution:
    """Seed 003 §6.3: base values from the constraints' lcm, then doubling the cheapest variable.

    Returns a :class:`Solution`: the per-target values of the free variables and the totals;
    raises KernelRejected when a static size is not an integer, when a tensor exceeds
    ``max_tensor_ratio`` times the input's elements, or when even the base values exceed the budget.
    """
    return Solution(**solve_sizes(analysis, targets, groups, budget, max_tensor_ratio))


def solve_sizes(analysis: Analysis, targets: Sequence, groups: int, budget: Budget,
                max_tensor_ratio: float = 64.0, check_cache: Optional[dict] = None,
                limits: Optional[Dict[str, float]] = None, statics: Optional[dict] = None) -> dict:
    """:func:`solve_budget`'s work, returning the Solution's fields as a dict (the sampler's fast path;
    ``check_cache`` remembers which static sizes were checked, ``statics`` the sizes' per-target values:
    both only for the same targets and G)."""
    statics = {} if statics is None else statics
    targets = [t.data() if isinstance(t, ConvTarget) else t for t in targets]
    envs = [target_env(t, groups) for t in targets]
    keys = [t.key for t in targets]
    reason = check_static(analysis.integral, envs, keys, check_cache)
    if reason:
        raise KernelRejected(reason)
    variables = list(analysis.variables)
    nv = len(variables)
    # lcm_{i,j}: x_j * r must be an integer for every size x_j * r it appears in.
    lcms = [[1] * nv for _ in targets]
    for size in analysis.integral:
        dyn = size.dynamic_vars()
        if not dyn:
            continue
        j = variables.index(dyn[0])
        for i, den in enumerate(_denominators_of(size, envs, statics)):
            if den != 1:
                lcms[i][j] = lcm((lcms[i][j], den))
    first = min(range(len(targets)), key=lambda i: targets[i].c_in)
    c1 = targets[first].c_in
    x = [[math.ceil(Fraction(t.c_in * lcms[first][j], c1 * lcms[i][j])) * lcms[i][j] for j in range(nv)]
         for i, t in enumerate(targets)]
    limits = limits if limits is not None else budget.limits(targets)
    costs = {what: _Terms(analysis.cost_terms(what), envs, variables, statics) for what in limits}
    counts = [t.count for t in targets]
    position = {v: j for j, v in enumerate(variables)}
    node_terms = []                     # per node: (element count per target, its free variables' powers)
    for shape in analysis.effective:
        coefs, dyn = _static_of(_numel_of(shape, statics), envs, statics)
        node_terms.append((coefs, tuple((position[v], p) for v, p in dyn)))
    caps = [max_tensor_ratio * t.c_in * t.h * t.w for t in targets]

    def too_big(i: int, xi: Sequence[int]) -> bool:
        cap = caps[i]
        for coefs, powers in node_terms:
            coef = coefs[i]
            for j, p in powers:
                coef *= xi[j] ** p
            if coef > cap:
                return True
        return False

    per_target = {what: [counts[i] * c.value(i, x[i]) for i in range(len(targets))] for what, c in costs.items()}
    totals = {what: sum(v) for what, v in per_target.items()}
    for what, limit in limits.items():
        if totals[what] > limit:
            raise KernelRejected(f"even the smallest legal sizes ({_values_text(variables, x, keys)}) need "
                                 f"{totals[what]:.4g} {what}, over the budget {limit:.4g}")
    for i in range(len(targets)):
        if too_big(i, x[i]):
            raise KernelRejected(f"a tensor exceeds {max_tensor_ratio:g}x the input's elements for the conv "
                                 f"{keys[i]} even at the smallest sizes")
    if nv:
        frozen = [[False] * nv for _ in targets]
        delta = [[0.0] * nv for _ in targets]

        def refresh(i: int) -> None:
            for j in range(nv):
                if frozen[i][j]:
                    continue
                doubled = list(x[i])
                doubled[j] *= 2
                d = 0.0
                for what, c in costs.items():
                    d += (counts[i] * c.value(i, doubled) - per_target[what][i]) / limits[what]
                delta[i][j] = d

        for i in range(len(targets)):
            refresh(i)
        while True:
            order = sorted((delta[i][j], i, j) for i in range(len(targets)) for j in range(nv) if not frozen[i][j])
            if not order:
                break
            done = False
            for _, i, j in order:
                doubled = list(x[i])
                doubled[j] *= 2
                new = {what: counts[i] * c.value(i, doubled) for what, c in costs.items()}
                if any(totals[w] - per_target[w][i] + new[w] > limits[w] for w in limits) or too_big(i, doubled):
                    frozen[i][j] = True      # costs only grow: this doubling never fits again
                    continue
                for w in limits:
                    totals[w] += new[w] - per_target[w][i]
                    per_target[w][i] = new[w]
                x[i] = doubled
                refresh(i)
                done = True
                break
            if not done:
                break
    values = {keys[i]: {f"x{v}": int(x[i][j]) for j, v in enumerate(variables)} for i in range(len(targets))}
    flops_terms = costs["flops"] if "flops" in costs else _Terms(analysis.cost_terms("flops"), envs, variables, statics)
    param_terms = costs["params"] if "params" in costs else _Terms(analysis.cost_terms("params"), envs, variables, statics)
    return dict(values=values,
                flops=int(sum(counts[i] * flops_terms.value(i, x[i]) for i in range(len(targets)))),
                params=int(sum(counts[i] * param_terms.value(i, x[i]) for i in range(len(targets)))),
                baseline_flops=sum(t.macs * t.count for t in targets),
                baseline_params=sum(t.weights * t.count for t in targets))


def _values_text(variables, x, keys) -> str:
    if not variables:
        return "no free size"
    return "; ".join(f"{k}: " + ", ".join(f"x{v}={x[i][j]}" for j, v in enumerate(variables))
                     for i, k in enumerate(keys[:2])) + ("; ..." if len(keys) > 2 else "")
