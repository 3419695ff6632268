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
    assert result["accuracy"] > 0.8
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
