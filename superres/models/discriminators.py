"""Discriminators for adversarial SR training (SRGAN, a size-agnostic VGG-style variant, and a
per-pixel U-Net with spectral normalisation as Real-ESRGAN uses).

Paper: C. Ledig, L. Theis, F. Huszar, J. Caballero, A. Cunningham, A. Acosta, A. Aitken, A. Tejani,
J. Totz, Z. Wang and W. Shi, "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017 (Figure 4, discriminator).

Both classify an HR-sized image (real HR or generator output) and return one raw logit per image
(``N x 1``, no sigmoid: use ``BCEWithLogitsLoss`` or a relativistic loss on it).

Shared convolution stack (Ledig et al.), base width W = 64:

    conv 3x3, C -> W,   stride 1, LeakyReLU(0.2)                    (no BN on the first layer)
    conv 3x3, W -> W,   stride 2, BN, LeakyReLU(0.2)
    conv 3x3, W -> 2W,  stride 1, BN, LeakyReLU(0.2)
    conv 3x3, 2W -> 2W, stride 2, BN, LeakyReLU(0.2)
    conv 3x3, 2W -> 4W, stride 1, BN, LeakyReLU(0.2)
    conv 3x3, 4W -> 4W, stride 2, BN, LeakyReLU(0.2)
    conv 3x3, 4W -> 8W, stride 1, BN, LeakyReLU(0.2)
    conv 3x3, 8W -> 8W, stride 2, BN, LeakyReLU(0.2)

Four stride-2 layers (padding 1) shrink an ``n``-pixel side to ``ceil(n / 16)`` after the stack.

* :class:`SRGANDiscriminator`: the paper's head, flatten -> dense 1024 -> LeakyReLU(0.2) -> dense 1.
  The flatten ties it to one input size (96 x 96 in the paper, 6 x 6 x 512 features).
* :class:`VGGStyleDiscriminator`: global average pooling instead of the flatten, then dense
  ``hidden`` (1024 by default, as SRGAN) -> LeakyReLU(0.2) -> dense 1, so it takes any patch size
  (useful when the training patch size changes, and far fewer parameters).

Convolutions followed by BN have no bias (BN's shift makes it redundant).

* :class:`UNetDiscriminator`: one logit per *pixel* (``N x 1 x H x W``), so the generator learns
  where an image looks generated, not only whether it does. Paper: X. Wang, L. Xie, C. Dong and
  Y. Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW
  2021 (Sec. 3.3, Fig. 6): a U-Net with skip connections, spectral normalisation on its inner
  convolutions to keep training stable. With base width W, LeakyReLU(0.2) after every conv but the last:

      conv 3x3 C -> W                                  x0 (full size)
      SN conv 4x4 stride 2: W -> 2W -> 4W -> 8W         x1 (1/2), x2 (1/4), x3 (1/8)
      up x2 (bilinear), SN conv 3x3 8W -> 4W, + x2
      up x2 (bilinear), SN conv 3x3 4W -> 2W, + x1
      up x2 (bilinear), SN conv 3x3 2W -> W,  + x0
      SN conv 3x3 W -> W, SN conv 3x3 W -> W, conv 3x3 W -> 1

  Height and width must be multiples of 8 (three halvings and three doublings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from superres.models.blocks import check_channels

#: (output-width multiplier of the base width, stride) of the eight convolutions.
_LAYERS: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2))


def _conv_stack(in_channels: int, width: int) -> nn.Sequential:
    """The eight-layer strided VGG-style stack shared by both discriminators."""
    layers: list[nn.Module] = []
    previous = in_channels
    for index, (multiplier, stride) in enumerate(_LAYERS):
        out = width * multiplier
        first = index == 0
        layers.append(nn.Conv2d(previous, out, 3, stride=stride, padding=1, bias=first))
        if not first:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        previous = out
    return nn.Sequential(*layers)


def _reduced_side(size: int) -> int:
    """Side length after the stack's four stride-2 convolutions (kernel 3, padding 1): ceil(n/2) each."""
    for _ in range(4):
        size = (size + 1) // 2
    return size


class SRGANDiscriminator(nn.Module):
    """Ledig et al.'s discriminator for ``input_size x input_size`` images; returns ``N x 1`` logits.

    Args:
        in_channels: image channels (1, 3 or N bands).
        input_size: the fixed HR patch side (96 in the paper); other sizes raise ``ValueError``.
        width: base width W of the conv stack (64 in the paper).
        hidden: units of the first dense layer (1024 in the paper).
    """

    def __init__(self, in_channels: int = 3, input_size: int = 96, width: int = 64, hidden: int = 1024) -> None:
        super().__init__()
        self.in_channels = check_channels(in_channels)
        if input_size < 1 or width < 1 or hidden < 1:
            raise ValueError(f"input_size, width and hidden must be >= 1, got {input_size}, {width}, {hidden}")
        self.input_size = input_size
        self.features = _conv_stack(in_channels, width)
        side = _reduced_side(input_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * width * side * side, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x S x S (S = input_size) -> N x 1 logits."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"SRGANDiscriminator was built for {self.input_size}x{self.input_size} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}; use input_size={x.shape[-2]} (square patches) or VGGStyleDiscriminator"
            )
        return self.classifier(self.features(x))


class VGGStyleDiscriminator(nn.Module):
    """The SRGAN conv stack with global average pooling, so any ``N x C x H x W`` works; returns ``N x 1``.

    Args:
        in_channels: image channels (1, 3 or N bands).
        width: base width W of the conv stack (64 as SRGAN).
        hidden: units of the first dense layer (1024 as SRGAN; ESRGAN-style heads use 100).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, hidden: int = 1024) -> None:
        super().__init__()
        self.in_channels = check_channels(in_channels)
        if width < 1 or hidden < 1:
            raise ValueError(f"width and hidden must be >= 1, got {width} and {hidden}")
        self.features = _conv_stack(in_channels, width)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8 * width, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x 1 logits."""
        return self.classifier(self.features(x))


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation (module docstring); returns
    ``N x 1 x H x W`` logits, one per pixel.

    Args:
        in_channels: image channels (1, 3 or N bands).
        width: base width W (64 in Real-ESRGAN).
        skip: add the encoder features to the decoder's (True in Real-ESRGAN).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, skip: bool = True) -> None:
        super().__init__()
        self.in_channels = check_channels(in_channels)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.skip = skip
        w = width
        self.first = nn.Conv2d(in_channels, w, 3, padding=1)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False)) for a, b in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w))
        )
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 3, padding=1, bias=False)) for a, b in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w))
        )
        self.refine = nn.Sequential(
            spectral_norm(nn.Conv2d(w, w, 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(w, w, 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W (H, W multiples of 8) -> N x 1 x H x W logits."""
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"UNetDiscriminator needs sides that are multiples of 8, got {x.shape[-2]}x{x.shape[-1]}")
        h = F.leaky_relu(self.first(x), 0.2)
        skips = [h]
        for conv in self.down:
            h = F.leaky_relu(conv(h), 0.2)
            skips.append(h)
        skips.pop()  # the deepest features are h itself
        for conv in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2)
            if self.skip:
                h = h + skips.pop()
        return self.refine(h)
