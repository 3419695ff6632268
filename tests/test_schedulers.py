"""sn.schedulers: ASHA and Hyperband over report(step, ...), for every algorithm and loop."""
import json
import math
import warnings

import pyglove as pg
import pytest

import symnas as sn
from symnas.reporting import Checkpoint, checkpoint, report, reporting_to
from symnas.schedulers import CONTINUE, PAUSE, STOP
from symnas.schedulers.rungs import Bracket, fronts, order
from symnas.trial import STOP_KEY

SPACE = pg.Dict(q=pg.floatv(0.0, 1.0), k=pg.oneof([1, 2, 3]))
MAX_EPOCHS = 27


def curve(value, epoch):
    """A learning curve that ends at ``q * k / 3`` and keeps the order of trials at every epoch."""
    return value.q * value.k / 3 * (1 - 0.7 ** epoch)


def training(value):
    for epoch in range(1, MAX_EPOCHS + 1):
        accuracy = curve(value, epoch)
        if report(epoch, accuracy=accuracy):
            break
    return {"accuracy": accuracy, "epochs": epoch}


def epochs_spent(study):
    return sum(r.metrics["epochs"] for r in study.completed)


# -- ranking ------------------------------------------------------------------------------------
def test_fronts_rank_points_by_non_domination():
    points = [(1.0, 1.0), (2.0, 0.0), (0.0, 2.0), (0.5, 0.5), (0.0, 0.0)]
    assert fronts(points) == [0, 0, 0, 1, 2]
    assert fronts([(3.0,), (1.0,), (3.0,), (2.0,)]) == [0, 2, 0, 1]


def test_order_puts_extremes_of_a_front_before_its_crowded_middle():
    points = [(1.0, 3.0), (2.0, 2.0), (2.1, 1.9), (3.0, 1.0), (0.0, 0.0)]
    ranked = order(points)
    assert set(ranked[:2]) == {0, 3} and ranked[-1] == 4


def test_bracket_milestones_stop_below_max_resource():
    assert Bracket(1, 3, 27).milestones == [1, 3, 9]
    assert Bracket(1, 3, 27, early_stopping_rate=1).milestones == [3, 9]
    assert Bracket(2, 2, 20).milestones == [2, 4, 8, 16]


def test_bracket_keeps_the_top_third_of_each_rung_in_arrival_order():
    bracket = Bracket(1, 3, 27)
    kept = []
    for trial_id, value in enumerate([0.5, 0.4, 0.6, 0.1, 0.7, 0.2], start=1):
        rung = bracket.arrive(trial_id, 1, (value,))
        kept.append(bracket.keeps(rung, trial_id))
    # n=1: keep; n=2 (0.4 < 0.5): 1 better, ceil(2/3)=1 -> stop; n=3: 0.6 best -> keep;
    # n=4: 0.1 worst -> stop; n=5: 0.7 best -> keep; n=6: 0.2 has 4 better >= ceil(6/3)=2 -> stop
    assert kept == [True, False, True, False, True, False]
    assert bracket.arrive(1, 2, (0.9,)) is None   # still rung 0, already recorded there


# -- ASHA in a search ---------------------------------------------------------------------------
def test_asha_finds_the_same_best_trial_for_a_fraction_of_the_epochs():
    full = sn.search(SPACE, training, sn.algorithms.Random(seed=3), num_trials=40, storage=None,
                     objectives="accuracy", progress=False)
    asha = sn.search(SPACE, training, sn.algorithms.Random(seed=3), num_trials=40, storage=None,
                     objectives="accuracy", progress=False,
                     scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS))
    assert asha.best_trial.id == full.best_trial.id
    assert asha.best_trial.metrics["epochs"] == MAX_EPOCHS
    assert epochs_spent(full) == 40 * MAX_EPOCHS
    assert epochs_spent(asha) <= 0.35 * epochs_spent(full)   # 348 of 1080


def test_stopped_trials_carry_the_stop_mark_on_their_last_report():
    study = sn.search(SPACE, training, sn.algorithms.Random(seed=1), num_trials=15, storage=None,
                      objectives="accuracy", progress=False,
                      scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS))
    stopped = [r for r in study.records if r.metrics["epochs"] < MAX_EPOCHS]
    assert stopped
    for record in study.records:
        marks = [bool(m.get(STOP_KEY)) for m in record.measurements]
        assert marks == [False] * (len(marks) - 1) + [record in stopped]
        if record in stopped:
            assert record.measurements[-1]["step"] in (1, 3, 9)   # rungs of min 1, eta 3, max 27


@pytest.mark.parametrize("algorithm", [
    sn.algorithms.Random(seed=0), sn.algorithms.RegularizedEvolution(population_size=5, tournament_size=2, seed=0),
    sn.algorithms.Reinforce(seed=0), sn.algorithms.Bayesian(seed=0, n_startup_trials=5)],
    ids=lambda a: type(a).__name__)
def test_asha_composes_with_every_algorithm(algorithm):
    study = sn.search(SPACE, training, algorithm, num_trials=20, storage=None, objectives="accuracy",
                      progress=False, scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS))
    assert len(study.completed) == 20
    assert any(r.metrics["epochs"] < MAX_EPOCHS for r in study.completed)
    full = [r for r in study.completed if r.metrics["epochs"] == MAX_EPOCHS]
    # the best trial trained fully: a stopped trial never beats the one that stopped it
    assert study.best_trial in full


def test_multi_objective_asha_stops_dominated_trials_and_keeps_the_pareto_front():
    # accuracy up, latency down; the curve ranks trials the same way at every epoch
    def evaluate(value):
        for epoch in range(1, 10):
            accuracy = value.a * (1 - 0.5 ** epoch)
            if report(epoch, accuracy=accuracy, latency=value.lat):
                break
        return {"accuracy": accuracy, "latency": value.lat, "epochs": epoch}

    points = [(0.9, 5.0), (0.5, 1.0), (0.4, 6.0), (0.95, 2.0), (0.3, 7.0), (0.2, 8.0), (0.6, 3.0)]
    space = pg.Dict(a=pg.oneof([p[0] for p in points]), lat=pg.oneof([p[1] for p in points]))
    sweep = [pg.DNA([i, i]) for i in range(len(points))]

    class Sweep(pg.DNAGenerator):
        multi_objective = True

        def _propose(self):
            if self.num_proposals >= len(sweep):
                raise StopIteration()
            return sweep[self.num_proposals]

    study = sn.search(space, evaluate, Sweep(), storage=None, progress=False,
                      objectives={"accuracy": "max", "latency": "min"},
                      scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=9))
    epochs = {(r.to_object().a, r.metrics["latency"]): r.metrics["epochs"] for r in study.completed}
    # (0.4, 6) is dominated by (0.9, 5) which arrived first; (0.3, 7) and (0.2, 8) by several
    assert epochs[(0.4, 6.0)] == 1 and epochs[(0.3, 7.0)] == 1 and epochs[(0.2, 8.0)] == 1
    # non-dominated on arrival: go on past the first rung
    assert epochs[(0.9, 5.0)] > 1 and epochs[(0.5, 1.0)] > 1 and epochs[(0.95, 2.0)] > 1
    front = {(r.to_object().a, r.metrics["latency"]) for r in study.pareto_front()}
    assert (0.95, 2.0) in front and (0.5, 1.0) in front


def test_asha_stops_trials_evaluated_in_worker_processes():
    study = sn.search(SPACE, training, sn.algorithms.Random(seed=3), num_trials=12, storage=None,
                      objectives="accuracy", progress=False, workers=2,
                      scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS))
    assert len(study.completed) == 12
    stopped = [r for r in study.completed if r.metrics["epochs"] < MAX_EPOCHS]
    assert stopped and all(r.measurements[-1].get(STOP_KEY) for r in stopped)
    assert epochs_spent(study) < 0.6 * 12 * MAX_EPOCHS


def test_a_resumed_study_rebuilds_the_rungs_from_stored_reports(tmp_path):
    db = str(tmp_path / "runs.db")
    first = sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS)
    sn.search(SPACE, training, sn.algorithms.Random(seed=5), num_trials=6, storage=db, name="s",
              objectives="accuracy", progress=False, scheduler=first)
    sizes = first.rung_sizes()[0]
    again = sn.schedulers.ASHA(min_resource=1, max_resource=MAX_EPOCHS)
    study = sn.search(SPACE, training, sn.algorithms.Random(seed=5), num_trials=10, storage=db, name="s",
                      objectives="accuracy", progress=False, scheduler=again)
    assert len(study.records) == 10
    assert again.rung_sizes()[0][0] == 10 and again.rung_sizes()[0][1] >= sizes[1]


def test_a_report_without_the_objective_warns_once_and_never_stops():
    def evaluate(value):
        for epoch in range(1, 5):
            report(epoch, loss=1.0 / epoch)
        return {"accuracy": value.q, "epochs": 4}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = sn.search(SPACE, evaluate, sn.algorithms.Random(seed=0), num_trials=4, storage=None,
                          objectives="accuracy", progress=False,
                          scheduler=sn.schedulers.ASHA(min_resource=1, max_resource=4))
    messages = [str(w.message) for w in caught if "no finite 'accuracy'" in str(w.message)]
    assert len(messages) == 1 and "loss" in messages[0]
    assert all(r.metrics["epochs"] == 4 for r in study.completed)


def test_the_scheduler_may_compare_a_metric_other_than_the_objective():
    scheduler = sn.schedulers.ASHA(min_resource=1, max_resource=9, objectives="loss:min")
    scheduler.bind_search((sn.Objective("accuracy"),))
    assert scheduler.decide(1, 1, {"loss": 0.5}) == CONTINUE
    assert scheduler.decide(2, 1, {"loss": 0.9}) == STOP    # larger loss: worse
    assert scheduler.decide(3, 1, {"loss": 0.1}) == CONTINUE


# -- Hyperband --------------------------------------------------------------------------------
def test_hyperband_deals_trials_to_brackets_in_hyperbands_proportions():
    scheduler = sn.schedulers.Hyperband(min_resource=1, max_resource=27, reduction_factor=3)
    assert scheduler.num_brackets == 4
    assert scheduler.bracket_weights() == [27, 12, 6, 4]
    scheduler.bind_search((sn.Objective("accuracy"),))
    counts = [0] * 4
    for trial_id in range(1, 50):
        counts[scheduler._bracket_index(trial_id)] += 1   # pylint: disable=protected-access
    assert counts == [27, 12, 6, 4]
    assert [b.milestones for b in scheduler._brackets] == [[1, 3, 9], [3, 9], [9], []]  # pylint: disable=protected-access


def test_hyperband_keeps_the_best_trial_and_saves_epochs():
    full = sn.search(SPACE, training, sn.algorithms.Random(seed=3), num_trials=40, storage=None,
                     objectives="accuracy", progress=False)
    hyperband = sn.search(SPACE, training, sn.algorithms.Random(seed=3), num_trials=40, storage=None,
                          objectives="accuracy", progress=False,
                          scheduler=sn.schedulers.Hyperband(min_resource=1, max_resource=MAX_EPOCHS))
    assert hyperband.best_trial.id == full.best_trial.id
    assert epochs_spent(hyperband) < 0.6 * epochs_spent(full)
    # the last bracket (one trial in 49, trial 6 first) never stops a trial
    assert hyperband.records[5].metrics["epochs"] == MAX_EPOCHS


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(reduction_factor=1), "reduction_factor must be a number >= 2"),
    (dict(reduction_factor=1.5), "reduction_factor must be a number >= 2"),
    (dict(min_resource=4, max_resource=2), r"max_resource \(2\) must be larger than min_resource \(4\)"),
    (dict(min_resource=3, max_resource=3), "must be larger than min_resource"),
    (dict(min_resource=0), "min_resource must be a positive number"),
    (dict(objectives={"accuracy": "up"}), "direction must be 'max' or 'min'"),
])
def test_bad_scheduler_arguments_are_one_clear_error(kwargs, message):
    for cls in (sn.schedulers.ASHA, sn.schedulers.Hyperband):
        arguments = dict(kwargs)
        if cls is sn.schedulers.Hyperband:
            arguments.setdefault("max_resource", 27)
        with pytest.raises(ValueError, match=message):
            cls(**arguments)


def test_hyperband_without_max_resource_is_a_clear_error():
    with pytest.raises(ValueError, match="Hyperband: max_resource is required"):
        sn.schedulers.Hyperband(min_resource=1)


def test_bad_scheduler_use_fails_before_any_trial_runs():
    calls = []

    def evaluate(value):
        calls.append(value)
        return value.q

    with pytest.raises(ValueError, match="scheduler= or early_stopping=, not both"):
        sn.search(SPACE, evaluate, num_trials=2, storage=None, progress=False,
                  scheduler=sn.schedulers.ASHA(max_resource=9), early_stopping=sn.schedulers.ASHA(max_resource=9))
    with pytest.raises(ValueError, match="mode='promote'.*use mode='stop'"):
        sn.search(SPACE, evaluate, num_trials=2, storage=None, progress=False,
                  scheduler=sn.schedulers.ASHA(max_resource=9, mode="promote"))
    assert calls == []


# -- pausing: the scheduler's side and the checkpoint API -----------------------------------------
def test_checkpoint_is_none_outside_a_search_and_names_plain_files(tmp_path):
    assert checkpoint() is None
    ckpt = Checkpoint(tmp_path / "t1")
    with reporting_to(lambda step, metrics: False, ckpt):
        assert checkpoint() is ckpt
        assert not checkpoint().resumed
        path = checkpoint().file("state.json")
    assert checkpoint() is None
    assert path == str(tmp_path / "t1" / "state.json") and (tmp_path / "t1").is_dir()
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError, match="plain file name"):
            ckpt.file(bad)
    pathlib_file = tmp_path / "t1" / "state.json"
    pathlib_file.write_text("{}")
    assert Checkpoint(tmp_path / "t1", resumed_step=3).resumed


def run_with_pauses(scheduler, evaluate, configs, root):
    """The loop docs/multi_fidelity.md specifies, reduced to one process: resume promoted trials
    from their checkpoints before proposing new ones; finalise the paused ones at the end."""
    scheduler.bind_search((sn.Objective("accuracy"),), can_pause=True)
    trials, results, queue = {}, {}, list(configs)
    while True:
        trial_id = scheduler.next_resume()
        if trial_id is None:
            if not queue:
                break
            trial_id = len(trials) + 1
            trials[trial_id] = {"config": queue.pop(0), "last_step": None}
        trial = trials[trial_id]

        def reporter(step, metrics, trial=trial, trial_id=trial_id):
            trial["last_step"], trial["last_metrics"] = step, metrics
            return scheduler.stops_at(trial_id, step, metrics)

        ckpt = Checkpoint(root / str(trial_id), resumed_step=trial["last_step"])
        with reporting_to(reporter, ckpt):
            result = evaluate(trial["config"])
        if trial_id not in scheduler.paused:
            scheduler.finish(trial_id)
            results[trial_id] = result
    for trial_id in scheduler.paused:   # never promoted: their last report is their result
        scheduler.finish(trial_id)
        results[trial_id] = dict(trials[trial_id]["last_metrics"], paused=True)
    return results


def test_promotion_mode_pauses_at_rungs_and_resumes_promoted_trials_from_their_checkpoints(tmp_path):
    trained = []

    def evaluate(quality):
        ckpt = checkpoint()
        epoch = 0
        if ckpt.resumed:
            with open(ckpt.file("state.json")) as f:
                epoch = json.load(f)["epoch"]
        while epoch < 9:
            epoch += 1
            trained.append((quality, epoch))
            with open(ckpt.file("state.json"), "w") as f:
                json.dump({"epoch": epoch}, f)
            if report(epoch, accuracy=quality * epoch):
                break
        return {"accuracy": quality * epoch, "epochs": epoch}

    qualities = [0.2, 0.5, 0.1, 0.9, 0.3, 0.4, 0.8, 0.6, 0.7]
    scheduler = sn.schedulers.ASHA(min_resource=1, max_resource=9, reduction_factor=3, mode="promote")
    results = run_with_pauses(scheduler, evaluate, qualities, tmp_path)
    # no epoch of any trial was trained twice: resumed trials went on from their checkpoints
    assert len(trained) == len(set(trained))
    # Li et al.'s rule, asynchronously: a trial in the top floor(n/3) of its rung when asked is
    # promoted, so 0.5 (the best of the first three) went on before better ones arrived
    assert scheduler.rung_sizes() == [[9, 4]]
    assert sorted(q for (q, e) in trained if e == 3) == [0.5, 0.7, 0.8, 0.9]
    finished = {qualities[t - 1]: r for t, r in results.items() if not r.get("paused")}
    assert set(finished) == {0.9} and finished[0.9]["epochs"] == 9
    assert len(trained) == 9 + 4 * 2 + 6   # rung 1 for all, rung 3 for four, epoch 9 for one
    assert scheduler.paused == []


def test_promotion_decisions_pause_unless_the_trial_is_next_to_promote():
    scheduler = sn.schedulers.ASHA(min_resource=1, max_resource=9, mode="promote")
    scheduler.bind_search((sn.Objective("accuracy"),), can_pause=True)
    assert scheduler.decide(1, 1, {"accuracy": 0.5}) == PAUSE     # 1 at the rung: floor(1/3) = 0
    assert scheduler.decide(2, 1, {"accuracy": 0.1}) == PAUSE
    assert scheduler.decide(3, 1, {"accuracy": 0.3}) == PAUSE     # now floor(3/3) = 1: trial 1
    assert scheduler.next_resume() == 1 and scheduler.next_resume() is None
    assert scheduler.decide(1, 2, {"accuracy": 0.6}) == CONTINUE  # between rungs
    assert scheduler.paused == [2, 3]


def test_a_paused_trainer_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    trainer = sn.train.Trainer(model=sn.nn.Sequential([sn.nn.Conv(4, 3), sn.nn.ReLU(), sn.nn.Dropout(0.2)]),
                               optimizer=sn.train.SGD(0.05, momentum=0.9), data=sn.data.Digits(), epochs=4,
                               batch_size=64, schedule=sn.train.Cosine(), train_size=400, eval_size=200,
                               device="cpu")
    uninterrupted = trainer.train()
    with reporting_to(lambda step, metrics: step == 2, Checkpoint(tmp_path / "t1")):
        paused = trainer.train()                   # "pause" after epoch 2
    assert paused["epochs"] == 2 and paused["stopped_early"]
    seen = []
    with reporting_to(lambda step, metrics: seen.append(step) or False, Checkpoint(tmp_path / "t1", resumed_step=2)):
        resumed = trainer.train()
    assert seen == [3, 4]                          # epochs 1-2 were not trained again
    assert resumed["epochs"] == 4
    assert resumed["accuracy"] == uninterrupted["accuracy"] and resumed["loss"] == uninterrupted["loss"]
    assert resumed.history == uninterrupted.history
