"""Tensor programs: operators as loop nests, program and neural transformations,
lowering to TVM, the equivalent torch module, timing (seed 001).

Example::

    import pyglove as pg, symnas as sn
    conv = sn.program.Conv2d(c_in=64, c_out=64, h=32, w=32, k=3)
    sched = sn.program.Schedule(conv, steps=[sn.program.Group(2)]
                                + sn.program.cpu_conv_template(co_block=4, oh_block=2))
    print(sched.flops, sched.output_shape, sched.measure().latency_ms)
    module = sched.to_torch()          # the same kernel as a torch.nn.Module
"""
import os

# TVM's runtime uses half the hardware threads unless told; it reads this once at start.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

# pylint: disable=wrong-import-position
from symnas._deprecation import renamed_names
from symnas.program.chain import ConvChain, chain_candidates, fastest_chain, row_tile_template
from symnas.program.errors import IllegalTransformation
from symnas.program.kernel import Kernel, KernelPart
from symnas.program.lower_tvm import cuda_target, host_target, resolve_target
from symnas.program.measure import Measurement, time_torch, time_torch_conv
from symnas.program.neural import Bottleneck, ChannelShuffle, Depthwise, Group, NeuralStep, Partition
from symnas.program.operators import Conv2d, DepthwiseConv2d, Linear, Operator
from symnas.program.schedule import Schedule
from symnas.program.search_space import (cpu_conv_template, cpu_packed_conv_template,
                                         cpu_templates, dense_template, gpu_conv_template,
                                         neural_choices, transformation_space)
from symnas.program.transformations import (Bind, CacheRead, CacheWrite, ComputeAt, DecomposeReduction, Fuse,
                                            Interchange, PackWeights, ProgramStep, Reorder, Split, Step, Tile,
                                            Unroll, Vectorize, Parallel)
from symnas.program.torch_tvm import TVMKernelModule, torch_threads
from symnas.program.tuning import TuningResult, tune_metaschedule

__all__ = ["ConvChain", "chain_candidates", "fastest_chain", "row_tile_template", "IllegalTransformation", "Kernel", "KernelPart", "cuda_target", "host_target",
           "resolve_target", "Measurement", "TuningResult", "time_torch", "time_torch_conv",
           "tune_metaschedule", "Bottleneck", "ChannelShuffle", "Depthwise", "Group", "NeuralStep", "Partition",
           "Conv2d", "DepthwiseConv2d", "Linear", "Operator", "Schedule", "cpu_conv_template",
           "cpu_packed_conv_template", "cpu_templates", "PackWeights", "TVMKernelModule", "torch_threads",
           "dense_template", "gpu_conv_template", "neural_choices", "transformation_space",
           "Bind", "CacheRead", "CacheWrite", "ComputeAt", "DecomposeReduction", "Fuse", "Interchange", "ProgramStep",
           "Reorder", "Split", "Step", "Tile", "Unroll", "Vectorize", "Parallel"]


# renamed Linear (sn.nn.Dense is the network layer); the old name still works, with a warning
__getattr__ = renamed_names(__name__, globals(), {"Dense": "Linear"})
