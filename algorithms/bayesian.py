"""Bayesian optimisation with Optuna (TPE or GP), driven define-by-run from the DNASpec."""
import random
import warnings

import pyglove as pg

from symnas.algorithms._decisions import ChoiceSlot, DecisionAlgorithm, FloatDecision
from symnas.constraints import violations_of

__all__ = ["Bayesian"]

_MAX_REPEATS = 20


def _optuna():
    import optuna  # pylint: disable=import-outside-toplevel
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class OptunaAlgorithm(DecisionAlgorithm):
    """Base of the algorithms that delegate to an Optuna sampler.

    Each proposal is ``study.ask()`` followed by a walk over the DNASpec: only the decisions active
    on the chosen conditional path are suggested (``suggest_categorical`` per choice or manyof slot,
    ``suggest_float(log=True)`` for log floats); feedback is ``study.tell``. A DNA that was not
    proposed by this instance (history given to ``recover``) is added with ``study.add_trial``.
    Recovery therefore rebuilds the sampler's knowledge but not its random state: a recovered
    instance proposes as well as, not identically to, an uninterrupted one. A queued warm-start
    point is added the same way (a completed Optuna trial). Under constraints each trial carries
    its violations as Optuna constraints (``Trial.set_constraint``), which TPE (constrained TPE)
    and NSGA-II (constraint-domination) use.
    """

    def _make_sampler(self):
        raise NotImplementedError

    def _directions(self):
        return ["maximize"]

    def _init_state(self):
        self._optuna = _optuna()
        self._asked = {}
        self._known = {}   # assignment -> (reward, violations), to answer repeats without re-evaluation
        self._study = None
        self._rng = random.Random(self.seed)
        if self._directions() is not None:
            self._create_study()

    def _create_study(self):
        with warnings.catch_warnings():
            # Optuna flags `group` (and GP) as experimental; that is no news to the user.
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            self._study = self._optuna.create_study(directions=self._directions(),
                                                    sampler=self._make_sampler())

    def _distribution(self, dec):
        dists = self._optuna.distributions
        if isinstance(dec, ChoiceSlot):
            return dists.CategoricalDistribution(list(range(dec.num_candidates)))
        return dists.FloatDistribution(dec.low, dec.high, log=dec.scale == "log")

    def _propose_values(self):
        if self._study is None:   # objectives unknown until the first feedback: start at random
            rng, space = self._rng, self._space
            return space.sample(lambda slot, banned: space.uniform_choice(slot, banned, rng),
                                lambda dec: dec.from_unit(rng.random()))
        avoid = getattr(self, "avoid_duplicates", False)
        for attempt in range(_MAX_REPEATS + 1):
            trial = self._study.ask()
            values = self._suggest(trial)
            key = tuple(values)
            if not avoid or key not in self._known or attempt == _MAX_REPEATS:
                break
            # A repeat of an evaluated point: answer it from memory and ask again, so the
            # caller never pays for the same evaluation twice.
            known_reward, known_violations = self._known[key]
            _set_constraints(trial, known_violations)
            self._study.tell(trial, known_reward)
        values, dna = self._space.assemble(values)
        self._asked[id(dna)] = (dna, trial)
        return values, dna

    def _suggest(self, trial) -> list:
        def choose(slot, banned):
            if slot.num_candidates == 1:
                return 0
            c = trial.suggest_categorical(slot.name, list(range(slot.num_candidates)))
            while c in banned:   # a distinct manyof slot: take the next free candidate
                c = (c + 1) % slot.num_candidates
            return c

        def draw(dec: FloatDecision):
            return trial.suggest_float(dec.name, dec.low, dec.high, log=dec.scale == "log")

        return self._space.sample(choose, draw, build=False)[0]

    def _feedback(self, dna, reward):
        reward = self._check_reward(reward)
        values = self._values_of(dna)
        violations = violations_of(dna)
        self._known[tuple(values)] = (reward, violations)
        entry = self._asked.pop(id(dna), None)
        if self._study is None:
            self._create_study_for(reward)
        if entry is not None and entry[0] is dna:
            _set_constraints(entry[1], violations)
            self._study.tell(entry[1], reward)
        else:
            self._add_trial(values, reward, violations)

    def _create_study_for(self, reward):
        self._create_study()

    def _add_trial(self, values, reward, violations=None):
        params, dists = {}, {}
        for dec in self._space.decisions:
            v = values[dec.index]
            if v is None or (isinstance(dec, ChoiceSlot) and dec.num_candidates == 1):
                continue
            params[dec.name] = v
            dists[dec.name] = self._distribution(dec)
        rewards = reward if isinstance(reward, tuple) else (reward,)
        system_attrs = {f"constraints:{i}": float(v) for i, v in enumerate(violations or ())}
        self._study.add_trial(self._optuna.trial.create_trial(
            values=list(rewards), params=params, distributions=dists, system_attrs=system_attrs))

    def _replay(self, trial_id, dna, reward):
        del trial_id
        if reward is not None:
            self._feedback(dna, reward)

    def _state(self):
        # Optuna's model is rebuilt from the told points (and their violations); its sampler's
        # random state is not kept
        return {**super()._state(), "told": [
            [list(values), list(reward) if isinstance(reward, tuple) else reward,
             None if violations is None else list(violations)]
            for values, (reward, violations) in self._known.items()]}

    def _load_state(self, state):
        super()._load_state(state)
        for told in state["told"]:
            values, reward = told[0], told[1]
            violations = tuple(told[2]) if len(told) > 2 and told[2] is not None else None
            reward = self._check_reward(tuple(reward) if isinstance(reward, list) else reward)
            self._known[tuple(values)] = (reward, violations)
            if self._study is None:
                self._create_study_for(reward)
            self._add_trial(list(values), reward, violations)


def _set_constraints(trial, violations) -> None:
    for i, value in enumerate(violations or ()):
        trial.set_constraint(str(i), float(value))


@pg.members([
    ("sampler", pg.typing.Enum("tpe", ["tpe", "gp"]), "Optuna sampler: TPE or Gaussian process."),
    ("n_startup_trials", pg.typing.Int(min_value=0, default=20),
     "Random trials before the model is used."),
    ("multivariate", pg.typing.Bool(default=True),
     "TPE: model decisions jointly (grouped by conditional path) instead of independently."),
    ("n_ei_candidates", pg.typing.Int(min_value=1, default=24),
     "TPE: candidates drawn per decision to maximise expected improvement."),
    ("avoid_duplicates", pg.typing.Bool(default=True),
     "If True, a suggestion that repeats an evaluated point is told its known reward and "
     "replaced (up to 20 times), so each proposal is new. Assumes a deterministic objective."),
    ("constant_liar", pg.typing.Bool(default=False),
     "TPE: treat running trials as bad while proposing (use when trials run in parallel)."),
    ("seed", pg.typing.Int().noneable(), "Random seed of the sampler."),
])
class Bayesian(OptunaAlgorithm):
    """Bayesian optimisation: Optuna's TPE (default) or GP sampler over the DNASpec's decisions.

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(op=pg.oneof(['conv', 'pool']), lr=pg.floatv(1e-5, 1e-1, scale='log'))
        for value, feedback in pg.sample(space, sn.algorithms.Bayesian(seed=0), num_examples=20):
            feedback(-abs(value.lr - 1e-3) + (value.op == 'conv'))
    """

    def _make_sampler(self):
        samplers = self._optuna.samplers
        if self.sampler == "gp":
            return samplers.GPSampler(seed=self.seed, n_startup_trials=self.n_startup_trials,
                                      deterministic_objective=False,
                                      warn_independent_sampling=False)
        return samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_startup_trials,
                                   multivariate=self.multivariate, group=self.multivariate,
                                   n_ei_candidates=self.n_ei_candidates,
                                   constant_liar=self.constant_liar)
