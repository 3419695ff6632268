"""Lowering a schedule to TVM: targets, helper blocks, compilation cache.

Example::

    target = host_target()            # {'kind': 'llvm', 'mcpu': 'skylake-avx512', ...}
    runtime = compile_module(Schedule(conv).lower(), target)
"""
import functools
import os
import platform
from typing import Any, Dict, Tuple, Union

TargetLike = Union[None, str, Dict[str, Any], Any]


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """LLVM's name of this machine's CPU, from the instruction sets it reports."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "generic"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "avx512f" in flags:
        return "skylake-avx512"
    if "avx2" in flags:
        return "haswell"
    if "avx" in flags:
        return "sandybridge"
    return "x86-64"


def host_vector_lanes() -> int:
    """float32 lanes of this CPU's widest vector registers (AVX-512: 16, AVX/AVX2: 8, else 4)."""
    return {"skylake-avx512": 16, "haswell": 8, "sandybridge": 8}.get(host_cpu(), 4)


def host_target() -> Dict[str, Any]:
    """A dict target for this CPU (TVM 0.27 rejects ``mcpu=native`` and bare strings)."""
    target = {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    if host_cpu() != "generic":
        target["mcpu"] = host_cpu()
    return target


def cuda_target(arch: str = "sm_90") -> Dict[str, Any]:
    return {"kind": "cuda", "arch": arch}


def resolve_target(target: TargetLike):
    """A ``tvm.target.Target`` from None/'llvm'/'cpu' (this CPU), 'cuda', a dict or a Target."""
    import tvm  # pylint: disable=import-outside-toplevel

    if isinstance(target, tvm.target.Target):
        return target
    if target is None or target in ("llvm", "cpu"):
        target = host_target()
    elif target == "cuda":
        target = cuda_target()
    elif isinstance(target, str):
        raise ValueError(f"unknown target {target!r}: use 'llvm', 'cuda' or a dict target")
    if target.get("kind") == "cuda":
        return tvm.target.Target(target, host=host_target())
    return tvm.target.Target(target)


def target_kind(target) -> str:
    return "cuda" if resolve_target(target).kind.name == "cuda" else "llvm"


def schedule_helper_blocks(sch, kind: str) -> None:
    """Default schedules for the padding and concatenation blocks around the convolutions.

    On CPU the padding is a parallel, vectorized copy; on GPU it is inlined into the
    convolution and the concatenation is spread over threads.
    """
    names = {sch.get(b).name_hint for b in _blocks(sch)}
    if "epilogue" in names:
        epilogue = sch.get_sblock("epilogue")
        try:
            # into the block that writes the output (a cache write-back or the concatenation):
            # the bias and ReLU are applied while the tile is still in registers
            sch.reverse_compute_inline(epilogue)
        except (RuntimeError, ValueError):   # TVM's ScheduleError: the reduction writes the output itself
            _parallel_copy(sch, epilogue)
    if "pad" in names:
        pad = sch.get_sblock("pad")
        if _moved_under_a_loop(sch, pad):
            pass                                # a ComputeAt step scheduled it already
        elif kind == "cuda":
            sch.compute_inline(pad)
        else:
            _parallel_copy(sch, pad)
    if "prologue" in names:
        prologue = sch.get_sblock("prologue")
        if not _moved_under_a_loop(sch, prologue):
            # the input's batch norm + ReLU, computed where the convolution (or its cache copy)
            # reads each value: no pass of its own over the input
            sch.compute_inline(prologue)
    if "out" in names:
        out = sch.get_sblock("out")
        if kind == "cuda":
            fused = sch.fuse(*sch.get_loops(out))
            block_x, thread_x = sch.split(fused, [None, 128])
            sch.bind(block_x, "blockIdx.x")
            sch.bind(thread_x, "threadIdx.x")
        else:
            _parallel_copy(sch, out)


def _moved_under_a_loop(sch, block) -> bool:
    """True when ``block`` shares its outermost loop with another block (compute_at)."""
    loops = sch.get_loops(block)
    if not loops:
        return False
    outer = sch.get_sref(loops[0])
    for other in _blocks(sch):
        if sch.get(other).name_hint == sch.get(block).name_hint:
            continue
        other_loops = sch.get_loops(other)
        if other_loops and sch.get_sref(other_loops[0]).same_as(outer):
            return True
    return False


def _blocks(sch):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return sch.get_child_blocks(root) if root is not None else []


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def _parallel_copy(sch, block) -> None:
    loops = sch.get_loops(block)
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(outer)
        sch.vectorize(loops[-1])
    else:
        sch.parallel(loops[0])


_COMPILED: Dict[Tuple[int, str], Any] = {}


def compile_module(mod, target: TargetLike):
    """Compiles (cached by structural hash and target) and returns TVM's Executable."""
    import tvm  # pylint: disable=import-outside-toplevel
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    resolved = resolve_target(target)
    key = (tvm_ffi.structural_hash(mod), str(resolved))
    if key not in _COMPILED:
        _COMPILED[key] = tvm.compile(mod, target=resolved)
    return _COMPILED[key]


def clear_cache() -> None:
    _COMPILED.clear()
