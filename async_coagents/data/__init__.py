"""The data layer (pure numpy, never imports ray): the IDX reader, dataset discovery and the
paper's preprocessing, generated tasks (multiplexer, correlated stream) and online streams of
numbered minibatches with saveable positions."""

from async_coagents.data.datasets import (
    Dataset,
    Split,
    describe_datasets,
    find_dataset,
    load_dataset,
)
from async_coagents.data.idx import read_idx, write_idx
from async_coagents.data.streams import (
    Batch,
    ClassBlockedStream,
    CorrelatedStream,
    ShuffledEpochs,
    Stream,
    UniformPatterns,
)
from async_coagents.data.tasks import (
    CorrelatedSpec,
    correlated_eval_sets,
    correlated_target,
    multiplexer,
)

__all__ = [
    "Batch",
    "ClassBlockedStream",
    "CorrelatedSpec",
    "CorrelatedStream",
    "Dataset",
    "ShuffledEpochs",
    "Split",
    "Stream",
    "UniformPatterns",
    "correlated_eval_sets",
    "correlated_target",
    "describe_datasets",
    "find_dataset",
    "load_dataset",
    "multiplexer",
    "read_idx",
    "write_idx",
]
