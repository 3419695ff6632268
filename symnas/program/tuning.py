"""TVM's own auto-scheduler (MetaSchedule) on an untransformed operator: the baseline our kernels meet.

Example::

    result = tune_metaschedule(sn.program.Conv2d(c_in=64, c_out=64, h=32, w=32, k=3), trials=32)
    print(result.latency_ms, result.cost_model)
"""
import dataclasses
import statistics
import tempfile
import time
from typing import Optional

import numpy as np

from symnas.program.lower_tvm import TargetLike, resolve_target
from symnas.program.measure import num_threads, time_module
from symnas.program.schedule import Schedule


def _metaschedule_build(mod, target, _params):
    """MetaSchedule's build without importing ``tvm.s_tir.tensor_intrin`` (its package
    imports every intrinsic, ~40 s per fresh worker; fp32 schedules do not tensorize)."""
    # pylint: disable=import-outside-toplevel
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


@dataclasses.dataclass
class TuningResult:
    latency_ms: float
    trials: int
    seconds: float
    error: Optional[str] = None
    cost_model: str = ""


def tune_metaschedule(op, trials: int = 32, target: TargetLike = None,
                      work_dir: Optional[str] = None, seed: int = 0,
                      cost_model: str = "auto") -> TuningResult:
    """TVM MetaSchedule on the untransformed operator, bounded to `trials` measured candidates.

    ``cost_model="auto"`` uses MetaSchedule's XGBoost model when ``xgboost`` is installed
    (``pip install -e ".[tune]"``) and its random model otherwise; at a few dozen trials the
    search is mostly its random initial population either way. Returns the tuned kernel's
    latency timed like every other kernel here; on failure the error is recorded and
    latency is ``nan`` (a baseline that did not run is not reported).
    """
    # pylint: disable=import-outside-toplevel
    import tvm
    from tvm.s_tir import meta_schedule as ms

    start = time.time()
    if cost_model == "auto":
        try:
            import xgboost  # noqa: F401  pylint: disable=unused-import
            cost_model = "xgb"
        except ImportError:
            cost_model = "random"
    resolved = resolve_target(target)
    schedule = Schedule(op, [])
    mod = tvm.IRModule({"main": schedule.kernel().prim_func()})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database = ms.tune_tir(
                mod, resolved, work_dir or tmp, max_trials_global=trials,
                num_trials_per_iter=min(trials, 16),
                builder=ms.builder.LocalBuilder(f_build=_metaschedule_build, timeout_sec=120),
                num_tuning_cores=num_threads(), seed=seed, cost_model=cost_model)
            sch = ms.tir_integration.compile_tir(database, mod, resolved)
        if sch is None:
            return TuningResult(float("nan"), trials, time.time() - start, "no valid schedule", cost_model)
        executable = tvm.compile(sch.mod, target=resolved)
        x, weights = schedule.random_inputs()
        device = tvm.cpu()
        args = [tvm.runtime.tensor(a, device) for a in [x] + weights]
        args.append(tvm.runtime.tensor(np.zeros(schedule.output_shape, "float32"), device))
        latency = statistics.median(time_module(executable, args))
        return TuningResult(latency, trials, time.time() - start, cost_model=cost_model)
    except Exception as error:  # pylint: disable=broad-except
        return TuningResult(float("nan"), trials, time.time() - start,
                            f"{type(error).__name__}: {str(error)[:300]}", cost_model)
