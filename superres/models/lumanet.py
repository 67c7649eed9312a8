"""``lumanet``: a compact, fast model that sharpens only the luma and leaves colour to bicubic.

Layers (defaults: 32 features, 2 middle convs; RGB in, RGB out)::

    luma       y = (65.481 R + 128.553 G + 24.966 B) / 255 - 0.5        (LR, fixed, 1 channel)
    head       3x3 conv, 1 -> 32, ReLU                                   (LR)
    middle     2 x [3x3 conv 32 -> 32, ReLU]                             (LR)
    tail       3x3 conv 32 -> s^2, PixelShuffle(s): a luma residual r     (LR -> HR, 1 channel)
    output     bicubic(x) + r / 0.8588, the same r added to R, G and B    (HR)

Why luma only: the paper protocol (docs/PROTOCOL.md) scores the Y channel, and the eye is far less
sensitive to chroma detail, which is why FSRCNN and ESPCN super-resolve Y alone and resize Cb/Cr
with bicubic. Adding the same amount ``k`` to R, G and B leaves Cb and Cr unchanged (their BT.601
coefficients sum to zero) and moves Y by ``0.8588 k`` (the Y coefficients sum to 219/255). So
``bicubic(rgb) + r / 0.8588`` *is* "bicubic chroma, learned luma" without any YCbCr conversion at HR:
the model maps RGB to RGB, is one ONNX graph, and needs no colour handling in the pipeline. The
colour conversions that FSRCNN/ESPCN pipelines do on every output pixel were a large part of what
made our Y-model pipelines slower than OpenCV's (docs/BENCHMARKS.md, "CPU inference speed").

Gray images (``in_channels=1``): the channel is the luma and the residual is added to it unchanged.
Other band counts have no luma; use ``enhanced`` or ``espcn`` for them.

Per LR pixel the learned convs take ``9 (F + m F^2 + F s^2)`` multiply-adds, 23,328 at the
defaults (F=32, m=2), about 1.5k per output pixel, plus 25 taps per output sample for the bicubic
base.

The tail's last conv starts at 0.1x its default initialisation with zero bias, so a fresh model
starts close to bicubic (as in ``enhanced``).

Training-time expansion (``expand=E``, default 0: off): every conv trains as a linear block of a 3x3
conv to ``E`` channels and a 1x1 conv back, plus an identity where input and output widths agree
(:class:`~superres.models.blocks.ExpandedConv3x3`). The network computes a function of exactly the
same form, but the factored weights train better. :meth:`LumaNet.folded` turns it into the plain
``lumanet`` (``expand=0``, same parameters, same speed), which is what is shipped and exported.

Int8 (``int8=True``, default off): the middle convs and the tail run in int8 (uint8 activations,
per-channel int8 weights, int32 bias, the residual requantized to uint8 around 128); the head, the
luma, the bicubic base and the sum stay float. Training is quantization-aware (fake quantization,
:mod:`superres.models.quant`): the activation scales are buffers observed while training, so a
float model is warm-started (``model.init_from``) and fine-tuned briefly to adapt its weights to
the rounding. In eval mode PyTorch computes exactly what the int8 engine computes (in float
arithmetic, so it is slow there); ``superres export`` writes those convs as ``QLinearConv`` nodes,
which onnxruntime runs about twice as fast as float convs on one CPU thread (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from superres.color import Y_COEFFS
from superres.models import quant
from superres.models.blocks import (
    MODEL_SCALES,
    BicubicUpsample,
    ExpandedConv3x3,
    bicubic_phase_kernels,
    check_scale,
    conv3x3_or_expanded,
    fold_expanded,
    scale_init_,
)
from superres.models.contract import ModelContract

__all__ = ["LumaNet", "LUMA_WEIGHTS", "LUMA_GAIN", "bicubic_phase_kernels"]

#: BT.601 luma weights for RGB in [0, 1]: the Y the model is scored on (superres.metrics), without
#: its 16/255 offset and scaled to [0, 1].
LUMA_WEIGHTS = tuple(c / 255.0 for c in Y_COEFFS)
#: How much Y moves when R, G and B all move by 1: 219/255.
LUMA_GAIN = sum(LUMA_WEIGHTS)


class LumaNet(nn.Module):
    """Plain conv chain on the luma at LR, pixel-shuffled to an HR luma residual over bicubic RGB.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        in_channels: 3 (RGB) or 1 (gray).
        channels: feature width.
        blocks: 3x3 convs between the head and the tail (old name ``num_convs``, still accepted by
            :func:`superres.models.build`).
        tail_init: factor on the default initialisation of the tail conv.
        expand: 0 for plain convs; else train each conv as a linear block through ``expand``
            channels, folded into a plain conv by :meth:`folded` (see the module docstring).
        int8: run the middle convs and the tail in int8 (quantization-aware: see the module
            docstring and :mod:`superres.models.quant`); the head stays float.
    """

    #: The EMA weight of each batch in the int8 observers (:func:`~superres.models.quant.observe_scale`).
    observer_momentum = 0.01

    #: RGB or gray, scales 2, 3 and 4; ``expand`` is training-only structure, folded away
    #: (superres.models.contract).
    CONTRACT = ModelContract(
        scales=MODEL_SCALES,
        channel_counts=(1, 3),
        training_options={"expand": 4},
        test_options={"channels": 8, "blocks": 1},
    )

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        channels: int = 32,
        blocks: int = 2,
        tail_init: float = 0.1,
        expand: int = 0,
        int8: bool = False,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        if in_channels not in (1, 3):
            raise ValueError(f"lumanet works on RGB (3 channels) or gray (1 channel) images, got {in_channels} channels")
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels} and {blocks}")
        if isinstance(expand, bool) or not isinstance(expand, int) or expand < 0:
            raise ValueError(f"expand must be an integer >= 0 (0: plain convs), got {expand!r}")
        if not isinstance(int8, bool):
            raise ValueError(f"int8 must be true or false, got {int8!r}")
        if int8 and expand:
            raise ValueError("int8 and expand cannot be combined: fine-tune the folded model (expand 0) in int8")
        self.in_channels = in_channels
        self.channels, self.num_convs, self.tail_init, self.expand = channels, blocks, tail_init, expand
        self.int8 = int8
        layers: list[nn.Module] = [conv3x3_or_expanded(1, channels, expand), nn.ReLU(inplace=True)]
        for _ in range(blocks):
            layers += [conv3x3_or_expanded(channels, channels, expand), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = conv3x3_or_expanded(channels, self.scale**2, expand)
        scale_init_(self.tail.squeeze if isinstance(self.tail, ExpandedConv3x3) else self.tail, tail_init)
        self.bicubic = BicubicUpsample(self.scale, in_channels)  # MATLAB's kernel: exactly imresize
        if in_channels == 3:
            self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1), persistent=False)
        else:
            self.register_buffer("luma", torch.ones(1, 1, 1, 1), persistent=False)
        if int8:
            # uint8 scales of the inputs of the middle convs and the tail, then of the residual.
            # Zero means "not observed yet": the first training batch sets them.
            self.register_buffer("act_scales", torch.zeros(blocks + 2))

    def contract(self) -> ModelContract:
        """The contract, with the fold of an expanded model, the int8 plan and the buffers a warm start
        from a float model file may lack (the int8 activation scales, observed afresh). The int8
        convs compute integer sums exactly in float32, which float16 or bfloat16 would round."""
        return self.CONTRACT.bind(
            self.scale,
            self.in_channels,
            fold=self.folded if self.expand else None,
            int8_plan=self.int8_plan if self.int8 else None,
            warm_start_optional=("act_scales",) if self.int8 else (),
            supports_half=not self.int8,
            supports_bfloat16=not self.int8,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` in [0, 1] -> ``N x C x (h*scale) x (w*scale)``."""
        y = (x * self.luma).sum(dim=1, keepdim=True) - 0.5
        # N x s^2 x h x w: the luma residual, phase-major
        residual = self._residual_int8(y) if self.int8 else self.tail(self.body(y))
        base = self.bicubic.phases(x)  # N x C*s^2 x h x w, channel-major like the residual
        if self.in_channels == 3:
            residual = (residual * (1.0 / LUMA_GAIN)).repeat(1, 3, 1, 1)
        return self.bicubic.shuffle(base + residual)

    def _quantized_convs(self) -> list[tuple[str, nn.Conv2d]]:
        """(path, conv) of the convs that run in int8: the middle convs, then the tail."""
        middle = [(f"body.{2 * k}", self.body[2 * k]) for k in range(1, self.num_convs + 1)]
        return middle + [("tail", self.tail)]

    def _residual_int8(self, y: torch.Tensor) -> torch.Tensor:
        """The residual with the middle convs and the tail in int8: fake-quantized while training
        (observing the scales), computed as onnxruntime's integer kernels do in eval mode."""
        scales = self.act_scales
        h = self.body[1](self.body[0](y))
        convs = self._quantized_convs()
        if not self.training:
            if not bool((scales > 0).all()):
                raise RuntimeError("lumanet int8: the activation scales were never observed; train or fine-tune the model first")
            q = quant.quantize(h, scales[0])
            for k, (_, conv) in enumerate(convs):
                zero_point = 0 if k + 1 < len(convs) else quant.SIGNED_ZERO_POINT
                q = quant.int8_conv(conv, q, scales[k], scales[k + 1], zero_point)
            return (q - quant.SIGNED_ZERO_POINT) * scales[len(convs)]
        for k, (_, conv) in enumerate(convs):
            if self.training:
                quant.observe_scale(scales, k, h, signed=False, momentum=self.observer_momentum)
            h = quant.quant_conv(conv, quant.fake_quant_act(h, scales[k]), scales[k])
            if k + 1 < len(convs):
                h = torch.relu(h)
        if self.training:
            quant.observe_scale(scales, len(convs), h, signed=True, momentum=self.observer_momentum)
        return quant.fake_quant_act(h, scales[len(convs)], quant.SIGNED_ZERO_POINT)

    def int8_plan(self) -> list[quant.Int8Conv]:
        """The convs the ONNX export writes as ``QLinearConv``, with their scales (empty when not int8)."""
        if not self.int8:
            return []
        scales = [float(s) for s in self.act_scales]
        convs = self._quantized_convs()
        return [
            quant.Int8Conv(
                module=path,
                in_scale=scales[k],
                out_scale=scales[k + 1],
                out_zero_point=0 if k + 1 < len(convs) else quant.SIGNED_ZERO_POINT,
                relu=k + 1 < len(convs),
            )
            for k, (path, _) in enumerate(convs)
        ]

    def folded(self) -> "LumaNet":
        """The plain ``lumanet`` (``expand=0``) computing the same function; ``self`` when already plain.

        Each expanded conv is multiplied out in float64 (outputs agree to float32 rounding). The
        result is on the same device and in the same train/eval mode as ``self``.
        """
        if self.expand == 0:
            return self
        twin = copy.deepcopy(self)
        fold_expanded(twin)
        plain = LumaNet(self.scale, self.in_channels, self.channels, self.num_convs, self.tail_init)
        plain.load_state_dict(twin.state_dict(), strict=True)
        return plain.to(next(self.parameters()).device).train(self.training)
