"""Trainer, optimizers, schedules, augmentation and early stopping."""
import math

import pyglove as pg
import pytest
import torch

import symnas as sn

SMALL_CNN = sn.nn.Sequential([sn.nn.Conv(16, 3), sn.nn.BatchNorm(), sn.nn.ReLU(),
                              sn.nn.Conv(32, 3, stride=2), sn.nn.ReLU()])


def _trainer(**kwargs):
    defaults = dict(model=SMALL_CNN, optimizer=sn.train.Adam(1e-2), data=sn.data.Digits(),
                    epochs=2, batch_size=64)
    defaults.update(kwargs)
    return sn.train.Trainer(**defaults)


def test_train_learns_digits_and_returns_metrics():
    result = _trainer(epochs=3).train()
    assert result["accuracy"] > 0.7 and result["test_accuracy"] > 0.7    # chance: 0.1
    assert float(result) == result["accuracy"] == result.reward
    assert result["params"] == sum(p.numel() for p in
                                   _trainer().classifier((1, 8, 8), 10).build((1, 8, 8)).parameters())
    # conv1 (1->16, 8x8) + conv2 (16->32, 4x4) + head (32->10) multiply-adds.
    assert result["flops"] == 16 * 9 * 64 + 32 * 16 * 9 * 16 + 32 * 10
    assert result["time_s"] > 0 and result["epochs"] == 3 and len(result.history) == 3


def test_training_is_deterministic_for_a_fixed_seed_on_cpu():
    aug = [sn.train.RandomCrop(1), sn.train.HorizontalFlip(), sn.train.Mixup(0.3)]
    a, b, c = (_trainer(seed=seed, augmentation=aug, device="cpu", train_size=256).train()
               for seed in (3, 3, 4))
    assert a.history == b.history
    assert a.history != c.history


def test_feature_extractor_gets_pool_and_linear_head_and_logits_are_kept():
    extractor = _trainer().classifier((1, 8, 8), 10)
    assert isinstance(extractor.layers[-1], sn.nn.Dense) and extractor.output_shape((1, 8, 8)) == (10,)
    logits = sn.nn.Sequential([sn.nn.Flatten(), sn.nn.Dense(10)])
    assert len(_trainer(model=logits).classifier((1, 8, 8), 10).layers) == 1


def test_seed_example_runs_with_pg_sample_and_rebinds():
    hyper_trainer = sn.train.Trainer(
        model=sn.nn.Stacked(op=pg.oneof([sn.nn.Identity(), sn.nn.MaxPool((3, 3)),
                                         sn.nn.Conv(pg.oneof([4, 8]), (3, 3))]), repeats=3),
        optimizer=pg.oneof([sn.train.Adam(2e-2), sn.train.RMSProp(pg.floatv(1e-6, 1e-3))]),
        data=sn.data.Synthetic(image_shape=(3, 8, 8), train_size=64, test_size=32), epochs=1)
    rewards = []
    for trainer, feedback in pg.sample(hyper_trainer, pg.geno.Random(seed=0), num_examples=4):
        result = trainer.train()
        feedback(result)
        rewards.append(float(result))
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)
    conv_trainer = pg.materialize(hyper_trainer, pg.DNA([(2, 0), 0]))
    swapped = conv_trainer.clone().rebind(
        lambda k, v, p: sn.nn.MaxPool((3, 3)) if isinstance(v, sn.nn.Conv) else v)
    assert isinstance(swapped.model.op, sn.nn.MaxPool)
    assert isinstance(conv_trainer.model.op, sn.nn.Conv)


def test_per_epoch_measurements_reach_feedback_and_early_stopping_ends_trial():
    space = _trainer(optimizer=sn.train.Adam(pg.oneof([1e-2, 1e-7])), epochs=4,
                     data=sn.data.Synthetic(train_size=128, test_size=64, separation=2.0))
    policy = sn.train.AccuracyCurveStopping(max_step=4, theta=0.9)
    results = []
    for trainer, feedback in pg.sample(space, pg.geno.Sweeping(), early_stopping_policy=policy):
        result = trainer.train(feedback=feedback)
        feedback(result, step=result["epochs"])
        results.append(result)
    good, bad = results
    assert good["epochs"] == 4 and not good["stopped_early"]
    assert bad["stopped_early"] and bad["epochs"] < 4


def test_train_reports_each_epoch_inside_a_search():
    from symnas.reporting import reporting_to
    seen = []
    with reporting_to(lambda step, metrics: seen.append((step, metrics)) or step >= 2):
        result = _trainer(epochs=5).train()
    assert [s for s, _ in seen] == [1, 2] and result["stopped_early"]
    assert set(seen[0][1]) == {"accuracy", "loss", "train_loss"}


def test_negative_learning_rate_is_a_clear_error():
    with pytest.raises(ValueError, match="learning rate must be positive, got lr=-0.1"):
        sn.train.SGD(-0.1)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        sn.train.Adam(pg.floatv(1e-3, 1e-2)).rebind(lr=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        _trainer(weight_decay=-1.0)


def test_diverging_training_raises_training_diverged_error():
    with pytest.raises(sn.train.TrainingDivergedError, match="diverged"):
        _trainer(model=sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.ReLU()]),
                 optimizer=sn.train.SGD(1e6), epochs=1, train_size=256).train()


def test_train_of_a_space_is_refused():
    with pytest.raises(ValueError, match="sample a concrete trainer"):
        _trainer(epochs=pg.oneof([1, 2])).train()


@pytest.mark.parametrize("optimizer", [sn.train.SGD(0.1), sn.train.Adam(1e-2),
                                       sn.train.AdamW(1e-2), sn.train.RMSProp(1e-3)])
def test_every_optimizer_trains_above_chance(optimizer):
    result = _trainer(optimizer=optimizer, epochs=1, weight_decay=1e-4, batch_size=16).train()
    assert result["accuracy"] > 0.25   # Chance is 0.1.


def test_schedules_follow_their_formulas():
    cosine = sn.train.Cosine()
    assert cosine.factor(0, 100, 10) == 1.0 and abs(cosine.factor(50, 100, 10) - 0.5) < 1e-9
    assert abs(cosine.factor(100, 100, 10)) < 1e-12
    assert sn.train.StepDecay(milestones=[2, 4], gamma=0.1).factor(45, 100, 10) == pytest.approx(0.01)
    assert sn.train.StepDecay(every=1, gamma=0.5).factor(25, 100, 10) == 0.25
    warm = sn.train.Warmup(epochs=1, then=sn.train.Cosine())
    assert warm.factor(0, 100, 10) == 0.1 and warm.factor(9, 100, 10) == 1.0
    assert warm.factor(10, 100, 10) == 1.0 and warm.factor(99, 100, 10) < 0.01


def test_augmentations_keep_shapes_and_mix_labels():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    crop = sn.train.RandomCrop(1).apply(x, g)
    assert crop.shape == x.shape
    assert torch.equal(sn.train.HorizontalFlip(p=1.0).apply(x, g), x.flip(3))
    zero_padded = sn.train.RandomCrop(2).apply(torch.ones(64, 1, 4, 4), g)
    assert (zero_padded == 0).any() and (zero_padded == 1).any()
    mixed, y1, y2, lam = sn.train.Mixup(0.4).mix(x, torch.tensor([0, 1]), g)
    assert 0.0 <= lam <= 1.0 and mixed.shape == x.shape
    # Labels were [0, 1], so the permuted labels are the permutation itself.
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[y2])


def _trial(tid, curve):
    return pg.tuning.Trial(id=tid, dna=pg.DNA(0), status="PENDING", created_time=0, measurements=[
        pg.tuning.Measurement(step=s, reward=a, metrics={"accuracy": a}, elapse_secs=0.0)
        for s, a in curve])


def test_median_stopping_stops_below_median_of_other_trials():
    policy = sn.train.MedianStopping(min_trials=2)
    for tid, acc in enumerate([0.5, 0.6, 0.7], start=1):
        assert not policy.should_stop_early(_trial(tid, [(1, acc)])) or tid == 3
    assert policy.should_stop_early(_trial(4, [(1, 0.55)]))
    assert not policy.should_stop_early(_trial(5, [(1, 0.65)]))


def test_accuracy_curve_rule_uses_lambda_of_progress():
    policy = sn.train.AccuracyCurveStopping(max_step=10, theta=0.5)
    assert policy.threshold(0) == 0.5 and policy.threshold(5) == 0.75 and policy.threshold(10) == 1.0
    policy.should_stop_early(_trial(1, [(2, 0.8), (10, 0.9)]))
    # lambda(2) = 0.6: 0.5 >= 0.48 keeps, 0.4 < 0.48 stops.
    assert not policy.should_stop_early(_trial(2, [(2, 0.5)]))
    assert policy.should_stop_early(_trial(3, [(2, 0.4)]))
    # At the end lambda = 1: anything below the best stops.
    assert policy.should_stop_early(_trial(4, [(10, 0.89)]))


def test_diverging_trial_fails_in_sn_search_and_the_search_goes_on():
    space = _trainer(model=sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.ReLU()]),
                     optimizer=sn.train.SGD(pg.oneof([1e6, 1e-2])), epochs=1, train_size=256)
    study = sn.search(space, algorithm=pg.geno.Sweeping(), num_trials=2, storage=None,
                      progress=False)
    statuses = sorted(r.status for r in study.records)
    assert statuses == ["completed", "failed"]
    failed = next(r for r in study.records if r.status == "failed")
    assert "diverged" in failed.error
    assert study.best.optimizer.lr == 1e-2


def test_one_cycle_follows_torch_one_cycle_lr_and_cycles_momentum():
    model = torch.nn.Linear(2, 2)
    ours = sn.train.SGD(0.2, momentum=0.9, nesterov=True).build(model.parameters())
    schedule = sn.train.OneCycle(pct_start=0.25, div_factor=10, final_div_factor=100)
    scheduler = schedule.build(ours, 40, 10)
    lrs, momenta = [], []
    for _ in range(40):
        lrs.append(ours.param_groups[0]["lr"])
        momenta.append(ours.param_groups[0]["momentum"])
        ours.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.02) and max(lrs) == pytest.approx(0.2) and lrs[-1] == pytest.approx(2e-4)
    assert lrs == pytest.approx([0.2 * schedule.factor(step, 40, 10) for step in range(40)])
    assert momenta[0] == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85)   # opposite to the rate
    with pytest.raises(ValueError, match="needs more than 4 steps, got 4"):
        schedule.build(ours, 4, 4)


def test_reflection_padded_crop_mirrors_the_border_instead_of_zeros():
    g = torch.Generator().manual_seed(0)
    ones = torch.ones(64, 1, 4, 4)
    assert torch.equal(sn.train.RandomCrop(2, padding_mode="reflect").apply(ones, g), ones)
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(32, 1, 1, 1)
    crops = sn.train.RandomCrop(1, padding_mode="reflect").apply(x, g)
    assert set(crops.unique().tolist()) <= set(range(16))           # every pixel comes from the image
    with pytest.raises(ValueError, match="padding_mode must be 'constant' or 'reflect'"):
        sn.train.RandomCrop(1, padding_mode="wrap")


def test_default_trainer_measures_on_a_validation_split_and_reports_test_accuracy():
    result = _trainer(epochs=1).train()
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["test_accuracy"] <= 1
    on_test = _trainer(epochs=1, validation_size=0).train()
    assert "test_accuracy" not in on_test
    with pytest.raises(ValueError, match="fractional validation_size must be below 1"):
        _trainer(validation_size=1.5).train()


def test_clipping_bounds_every_step_and_records_the_gradient_norms():
    history = _trainer(clip_grad_norm=1e-6, train_size=64, batch_size=16, epochs=2).train().history
    assert [e["clipped_steps"] for e in history] == [4, 4]       # 64 examples in batches of 16: every step
    assert all(e["grad_norm_max"] >= e["grad_norm_median"] > 0 for e in history)
    assert all("clipped_steps" not in e for e in _trainer(train_size=64, batch_size=16).train().history)


def test_gpu_recipe_options_train_on_cpu_and_by_name_init_matches_the_network_built_alone():
    net = sn.nn.Sequential([sn.nn.Conv(8, 3), sn.nn.BatchNorm(), sn.nn.ReLU(), sn.nn.GlobalPool(), sn.nn.Dense(10)])
    trainer = _trainer(model=net, optimizer=sn.train.SGD(0.05, momentum=0.9, nesterov=True), weight_decay=5e-4,
                       decay_1d_params=False, schedule=sn.train.OneCycle(), mixed_precision=True, channels_last=True,
                       augmentation=[sn.train.RandomCrop(1, padding_mode="reflect"), sn.train.HorizontalFlip()],
                       init="by_name", drop_last=True, eval_every=2, epochs=3, train_size=200, batch_size=64)
    result = trainer.train()
    assert result["epochs"] == 3 and 0 <= result["accuracy"] <= 1
    assert ["accuracy" in e for e in result.history] == [False, True, True]   # every 2nd epoch and the last
    model = trainer._build((1, 8, 8), 10, torch.device("cpu"))
    alone = sn.nn.init_by_name(net.build((1, 8, 8)), 0)
    assert torch.equal(next(model.parameters()), next(alone.parameters()))
    groups = trainer._optimizer(model).param_groups
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert all(p.dim() <= 1 for p in groups[1]["params"])


def test_a_run_whose_loss_jumps_back_towards_chance_is_marked_diverged():
    assert sn.train.diverging([{"loss": 1.67}, {"loss": 0.75}, {"loss": 0.53}, {"loss": 2.26}])
    assert sn.train.diverging([{"train_loss": 1.2}, {"train_loss": float("nan")}])
    assert not sn.train.diverging([{"loss": 1.67}, {"loss": 0.75}, {"loss": 0.53}, {"loss": 0.55}])
    assert not sn.train.diverging([{"loss": 0.30}, {"loss": 0.20}, {"loss": 0.32}])   # far below chance
    assert not sn.train.diverging([])


def test_paired_runs_train_both_models_on_every_seed_and_give_the_mean_difference():
    small = sn.nn.Sequential([sn.nn.Conv(4, 3), sn.nn.ReLU()])
    pairs = sn.train.PairedRuns(trainer=_trainer(model=None, epochs=1, train_size=128),
                                models={"small": small, "base": SMALL_CNN}, seeds=[0, 1])
    result = pairs.run(workers=2)
    assert sorted(result.runs) == [0, 1] and set(result.runs[0]) == {"small", "base"}
    diffs = [100 * (r["base"]["accuracy"] - r["small"]["accuracy"]) for _, r in sorted(result.runs.items())]
    assert result.differences == pytest.approx(diffs)
    mean, (low, high) = sn.train.t_interval(diffs)
    assert result.mean_difference == pytest.approx(mean) and low <= mean <= high
    assert "mean difference" in result.table() and result.diverged() == []
    alone = _trainer(model=SMALL_CNN, epochs=1, train_size=128, seed=1).train()
    assert result.runs[1]["base"]["accuracy"] == alone["accuracy"]   # a worker trains as this process does
    with pytest.raises(ValueError, match="exactly two models"):
        sn.train.PairedRuns(trainer=_trainer(model=None), models={"a": SMALL_CNN})


def test_a_failing_run_does_not_stop_the_others_and_is_named_at_the_end():
    saved = []
    trainers = {"bad": _trainer(epochs=1, train_size=128, eval_size=-1), "good": _trainer(epochs=1, train_size=128)}
    with pytest.raises(sn.train.RunsFailedError, match=r"1 of 2 runs failed \(bad: ValueError: .*eval_size") as e:
        sn.train.train_all(trainers, on_done=lambda key, run: saved.append(key))
    assert saved == ["good"] and list(e.value.done) == ["good"] and 0 < e.value.done["good"]["accuracy"] <= 1
