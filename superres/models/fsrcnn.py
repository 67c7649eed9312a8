"""FSRCNN: the fast super-resolution CNN (an hourglass network with a learned deconvolution).

Paper: C. Dong, C. C. Loy and X. Tang, "Accelerating the Super-Resolution Convolutional Neural
Network", ECCV 2016.

Why it matters: unlike SRCNN it works on the LR image directly, squeezes the features through a
thin mapping stage (``s`` channels) and upsamples only at the end with a transposed convolution, so
it is tiny (about 12k weights) and fast while beating SRCNN.

Layer configuration, FSRCNN(d, s, m) with the paper's d = 56, s = 12, m = 4, PReLU after every
convolution except the last:

    feature extraction  conv 5x5, C -> d,  PReLU
    shrinking           conv 1x1, d -> s,  PReLU
    mapping (m times)   conv 3x3, s -> s,  PReLU
    expanding           conv 1x1, s -> d,  PReLU
    deconvolution       ConvTranspose 9x9, d -> C, stride = scale, padding = 4,
                        output_padding = scale - 1

The deconvolution's output is ``(h - 1)*r - 2*4 + 9 + (r - 1) = r*h``: exactly ``r*h x r*w`` for
every scale. PReLU has one slope per channel.

Module layout and parameter names follow yjn870/FSRCNN-pytorch (``first_part``, ``mid_part``,
``last_part``), so its state dicts load with ``load_state_dict`` directly; see
:func:`load_yjn870_state_dict`, which also checks shapes and says what does not fit.

The yjn870 x4 weights (``../shared/peers/yjn870-pr6_fsrcnn_x4.pth``) load into ``FSRCNN(4, 1)`` and
score 30.51 dB PSNR-Y on Set5 x4 (the shared sanity table: 30.52; the paper: 30.71/30.72).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from superres.models.blocks import check_channels, check_scale
from superres.models.contract import ModelContract
from superres.scales import SCALES



class FSRCNN(nn.Module):
    """Dong et al.'s FSRCNN(d, s, m).

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8 (the deconvolution stride).
        in_channels: image channels (1 for Y as in the paper, 3 for RGB, or N bands).
        channels: feature (LR) dimension, the paper's d = 56.
        s: shrunk mapping dimension, 12 in the paper.
        blocks: number of 3x3 mapping layers, the paper's m = 4.

    :func:`superres.models.build` still accepts the paper's names ``d`` and ``m`` for ``channels`` and
    ``blocks``.
    """

    #: Any channel count, scales 2, 3, 4 and 8 (superres.models.contract).
    CONTRACT = ModelContract(scales=SCALES, test_options={"channels": 8, "s": 4, "blocks": 1})

    def __init__(self, scale: int = 4, in_channels: int = 1, channels: int = 56, s: int = 12, blocks: int = 4) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.in_channels = check_channels(in_channels)
        d, m = channels, blocks  # the paper's names
        if d < 1 or s < 1 or m < 0:
            raise ValueError(f"FSRCNN needs channels (d), s >= 1 and blocks (m) >= 0, got d={d}, s={s}, m={m}")
        self.first_part = nn.Sequential(nn.Conv2d(in_channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, in_channels, 9, stride=scale, padding=4, output_padding=scale - 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init for the PReLU convolutions and N(0, 0.001) for the deconvolution (as in the paper).

        The small deconvolution weights let the network start near a constant output, so the
        early gradient comes from the mapping layers rather than from a noisy last layer.
        """
        for module in (*self.first_part, *self.mid_part):
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.last_part.weight, std=0.001)
        nn.init.zeros_(self.last_part.bias)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w in [0, 1] -> N x C x (r*h) x (r*w), not clamped."""
        return self.last_part(self.mid_part(self.first_part(x)))


def load_yjn870_state_dict(model: FSRCNN, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load weights saved by yjn870/FSRCNN-pytorch (``class FSRCNN(scale_factor, num_channels, d, s, m)``).

    The layouts are identical, so this is ``load_state_dict(strict=True)`` with one extra check:
    every tensor's shape must match, and a mismatch names the key and both shapes (typically a
    file for another scale's ``d``/``s``/``m`` or a 3-channel model for a 1-channel file). The
    deconvolution's stride is not stored in the file, so the caller must build ``model`` with the
    scale the file was trained for (the file name says it: ``fsrcnn_x4.pth``).

    Raises:
        ValueError: missing/unexpected keys or a shape mismatch.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f"FSRCNN weights: missing keys {missing}, unexpected keys {unexpected}")
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ValueError(
                f"FSRCNN weights: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state_dict, strict=True)
