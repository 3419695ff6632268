"""The error a hardware cost evaluation raises when an accelerator cannot run a layer."""
from symnas.errors import TrialRejected


class HardwareError(TrialRejected):
    """An accelerator cannot run a layer (its buffers cannot hold any tile, ZigZag found no mapping, its
    dataflow unrolls a loop the workload lacks, ...). Inside ``sn.search`` the trial is recorded as
    rejected with this reason; outside a search it is an ordinary exception naming the layer.

    Example::

        try:
            sn.hw.CostModel().layer_cost(layer, tiny_accelerator)
        except sn.hw.HardwareError as error:
            print(error.reason)
    """
