"""REINFORCE policy gradient over the decision points (plain Python: no torch, no numpy)."""
import math
import random

import pyglove as pg

from symnas.algorithms._decisions import ChoiceSlot, DecisionAlgorithm

__all__ = ["Reinforce"]

_MIN_STD, _MAX_STD = 0.02, 0.5


@pg.members([
    ("learning_rate", pg.typing.Float(min_value=0.0, default=0.1),
     "Step size of the policy-gradient ascent on logits / Gaussian parameters."),
    ("entropy_weight", pg.typing.Float(min_value=0.0, default=0.0),
     "Weight of the entropy bonus (keeps the policy exploring)."),
    ("baseline_decay", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.95),
     "Decay of the exponential-moving-average reward baseline."),
    ("normalize_advantage", pg.typing.Bool(default=True),
     "Divide the advantage by an EMA of its scale, so learning_rate does not depend on the "
     "reward's units."),
    ("initial_std", pg.typing.Float(min_value=_MIN_STD, max_value=_MAX_STD, default=0.25),
     "Initial std of the Gaussian policy of a float, in its scaled [0, 1] unit."),
    ("seed", pg.typing.Int().noneable(), "Random seed; None draws from the OS."),
])
class Reinforce(DecisionAlgorithm):
    """REINFORCE (Williams 1992) with independent per-decision distributions.

    Each choice (a ``oneof`` or a ``manyof`` slot) has a softmax over its candidates; each float
    has a Gaussian on its scaled unit interval (log space for ``scale='log'``) with a learned mean
    and std. After a reward r, every decision active in that DNA moves along
    ``(r - baseline) * grad log p`` plus ``entropy_weight * grad entropy``; inactive conditional
    decisions get no gradient. The baseline is an exponential moving average of rewards.
    Under constraints an infeasible trial is learnt as a reward one observed reward range below
    the worst reward seen (so the policy moves away from it whatever its objective), and a queued
    warm-start point is learnt from like a proposal.

    Example::

        import pyglove as pg, symnas as sn
        space = pg.List([pg.oneof(range(5)) for _ in range(6)])
        for value, feedback in pg.sample(space, sn.algorithms.Reinforce(learning_rate=0.1, seed=1),
                                         num_examples=50):
            feedback(float(sum(value)))
    """

    def _init_state(self):
        self._rng = random.Random(self.seed)
        # Plain lists: the per-decision distributions are tiny, where numpy's call overhead dominates.
        self._logits = {s.index: [0.0] * s.num_candidates for s in self._space.slots}
        self._mean = {f.index: 0.5 for f in self._space.floats}
        self._log_std = {f.index: math.log(self.initial_std) for f in self._space.floats}
        self._baseline = None
        self._scale = None
        self._reward_range = None   # (lowest, highest) reward seen: the penalty's unit under constraints

    def _weights(self, slot: ChoiceSlot, banned) -> list:
        logits = self._logits[slot.index]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        for b in banned:
            weights[b] = 0.0
        return weights

    def _choose(self, slot, banned):
        if slot.num_candidates == 1:
            return 0
        weights = self._weights(slot, banned)
        r = self._rng.random() * sum(weights)
        last = 0
        for i, w in enumerate(weights):
            if w > 0.0:
                last = i
                r -= w
                if r < 0.0:
                    return i
        return last

    def _draw(self, dec):
        u = self._rng.gauss(self._mean[dec.index], math.exp(self._log_std[dec.index]))
        return dec.from_unit(u)

    def _propose_values(self):
        return self._space.sample(self._choose, self._draw)

    def _learn_constrained(self, values, reward, violation):
        low, high = self._reward_range or (reward, reward)
        low, high = min(low, reward), max(high, reward)
        self._reward_range = (low, high)
        if violation > 0.0:
            reward = low - max(high - low, 1e-12)
        self._learn(values, reward)

    def _learn(self, values, reward):
        if self._baseline is None:
            self._baseline, self._scale = reward, 0.0
            return
        advantage = reward - self._baseline
        self._baseline = self.baseline_decay * self._baseline + (1 - self.baseline_decay) * reward
        if self.normalize_advantage:
            self._scale = self.baseline_decay * self._scale + (1 - self.baseline_decay) * advantage ** 2
            advantage = advantage / (math.sqrt(self._scale) + 1e-8)
        lr, ent = self.learning_rate, self.entropy_weight
        for dec in self._space.decisions:
            v = values[dec.index]
            if v is None:
                continue
            if isinstance(dec, ChoiceSlot):
                if dec.num_candidates == 1:
                    continue
                weights = self._weights(dec, [values[i] for i in dec.distinct_from])
                total = sum(weights)
                p = [w / total for w in weights]
                logits = self._logits[dec.index]
                if ent:
                    logp = [math.log(q) if q > 0.0 else 0.0 for q in p]
                    entropy = -sum(q * lq for q, lq in zip(p, logp))
                for k, q in enumerate(p):
                    # d log p(v) / d logit_k = [k == v] - p_k;  d H / d logit_k = -p_k (log p_k + H)
                    step = advantage * ((k == v) - q)
                    if ent:
                        step -= ent * q * (logp[k] + entropy)
                    logits[k] += lr * step
            else:
                mean, log_std = self._mean[dec.index], self._log_std[dec.index]
                std = math.exp(log_std)
                z = (dec.to_unit(v) - mean) / std
                mean += lr * advantage * z * std   # natural-gradient step: grad * std^2
                log_std += lr * (advantage * (z * z - 1.0) * 0.5 + ent)
                self._mean[dec.index] = min(max(mean, 0.0), 1.0)
                self._log_std[dec.index] = min(max(log_std, math.log(_MIN_STD)), math.log(_MAX_STD))

    def _state(self):
        return {**super()._state(), "logits": [[i, v] for i, v in self._logits.items()],
                "mean": [[i, v] for i, v in self._mean.items()],
                "log_std": [[i, v] for i, v in self._log_std.items()],
                "baseline": self._baseline, "scale": self._scale,
                "reward_range": None if self._reward_range is None else list(self._reward_range)}

    def _load_state(self, state):
        super()._load_state(state)
        self._logits = {int(i): [float(x) for x in v] for i, v in state["logits"]}
        self._mean = {int(i): float(v) for i, v in state["mean"]}
        self._log_std = {int(i): float(v) for i, v in state["log_std"]}
        self._baseline, self._scale = state["baseline"], state["scale"]
        reward_range = state.get("reward_range")
        self._reward_range = None if reward_range is None else (float(reward_range[0]), float(reward_range[1]))
