"""The whole training step in one CUDA graph (``train.cuda_graph``).

Why. On a GPU, a training step of an SR network is hundreds of small kernels: the batch (gather,
MATLAB-bicubic downscale, conversion), forward, loss, backward, optimizer (566 launches per step for
``edsr-baseline``). Each launch costs the host a few microseconds of Python and dispatcher time, and
for all but the largest models that host time, not the GPU, sets the pace. On an H100 the eager
steps of ``enhanced`` and ``lumanet`` kept the GPU busy 24-31% of the time, and replaying them from
one graph made them 2.9x and 3.4x faster (docs/BENCHMARKS.md, "Training throughput").
``torch.compile(mode="reduce-overhead")`` replays the forward and backward passes from CUDA graphs,
with inductor's fused kernels (the faster choice for ``edsr-baseline``, whose step is GPU-bound), but
the batch, the loss and the optimizer stay separate launches, and it compiles at start-up. Here
the step function, with all of these, is captured once and then replayed: one graph launch per
step, plus the copy of the step's inputs (for the device-resident path a ``3 x B`` tensor of crop
descriptors; for the DataLoader path the batch itself).

How. :class:`GraphStep` wraps a step function ``fn(*inputs) -> outputs`` (tensors in, tensors out):

1. the first ``warmup`` calls run ``fn`` eagerly, on a side stream (as PyTorch's CUDA-graph notes
   ask): these are real training steps, and they let cuDNN pick its kernels and every lazily made
   tensor (resize taps, the optimizer's state) exist before the capture;
2. the next call copies its inputs into static buffers and captures ``fn`` on them into a graph
   (capturing runs nothing), then replays it once for that step;
3. every later call copies its inputs into the static buffers and replays the graph.

The outputs are the graph's static tensors, overwritten by the next replay: read them (or copy
them) before the next call, in stream order (queued GPU work is fine).

What the step function must respect, so that a replay does what an eager call would: no host
synchronisation and no host-to-device copy inside it, nothing that depends on host values that
change between steps except through device tensors (the learning rate is a device tensor, filled
before each step; the optimizer is created with ``capturable=True``), and no new tensors held
from one step to the next except through the model, the optimizer and the outputs. The trainer
checks which settings break that (``_cuda_graph_conflict`` in :mod:`superres.training.trainer`).

Where there is no CUDA (``capture=False``) the wrapper calls ``fn`` eagerly every time: the same
step function, the same inputs, on the CPU, so the tests can check that the restructured step
trains exactly like the ordinary one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: Eager steps before the capture (PyTorch's CUDA-graph notes use 3; cuDNN's autotuning and the
#: optimizer's lazily made state need one).
WARMUP_STEPS = 3

StepFn = Callable[..., Sequence[torch.Tensor]]


class GraphStep:
    """``fn`` run eagerly ``warmup`` times, then captured in one CUDA graph and replayed (module
    docstring). ``capture=False`` (CPU) always runs ``fn`` eagerly."""

    def __init__(self, fn: StepFn, *, device: torch.device, warmup: int = WARMUP_STEPS, capture: bool = True) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.fn = fn
        self.device = torch.device(device)
        self.warmup = int(warmup)
        self.capture = bool(capture) and self.device.type == "cuda"
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._static_inputs: list[torch.Tensor] = []
        self._static_outputs: tuple[torch.Tensor, ...] = ()
        self._side: torch.cuda.Stream | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        if not self.capture:
            return tuple(self.fn(*inputs))
        if self.calls <= self.warmup:
            return self._eager_on_side_stream(tuple(x.to(self.device, non_blocking=True) for x in inputs))
        if self.graph is None:
            self._capture(inputs)
        for static, x in zip(self._static_inputs, inputs):
            static.copy_(x, non_blocking=True)  # from pinned host memory (DataLoader path) or the device
        assert self.graph is not None
        self.graph.replay()
        return self._static_outputs

    def _eager_on_side_stream(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)  # the inputs were made on the current stream
        with torch.cuda.stream(self._side):
            outputs = tuple(self.fn(*inputs))
        current.wait_stream(self._side)
        # Cross-stream use, for the caching allocator: inputs made on the current stream were read on
        # the side stream, outputs made on the side stream are read on the current one.
        for x in inputs:
            x.record_stream(self._side)
        for x in outputs:
            x.record_stream(current)
        return outputs

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        self._static_inputs = [torch.empty(x.shape, dtype=x.dtype, device=self.device) for x in inputs]
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (a DataLoader's pin-memory thread) may go on calling CUDA meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._static_outputs = tuple(self.fn(*self._static_inputs))
        self.graph = graph
