"""Training losses: pixel (L1, MSE, Charbonnier), perceptual and style (VGG19 features), adversarial,
and their weighted sum.

All content losses take ``(sr, hr)``, ``N x C x H x W`` float tensors in [0, 1], and return a scalar.
The pixel terms compare all channels by default; ``space: y`` compares the BT.601 luma instead
(:class:`LumaLoss`; RGB or gray), the channel that PSNR-Y scores, e.g. ``{type: l1, space: y}``.
The adversarial loss is different (it scores a discriminator's logits, not images); see
"Adversarial terms" below.

Perceptual loss (Johnson et al. 2016; SRGAN; ESRGAN): distance between VGG19 feature maps of SR and
HR. The VGG19 ``features`` stack is built here with exactly torchvision's layer indices, so the state
dict keys are ``features.N.weight`` / ``features.N.bias`` and torchvision's official weights file
(``vgg19-dcbb9e9d.pth``) loads as is, without torchvision installed. Only the layers up to the deepest
requested one are built (conv5_4 needs 35 of 37 modules; conv2_2 needs 8), and the network is frozen.

Layer names follow the paper's ``convB_L`` / ``reluB_L`` / ``poolB`` naming (block B, layer L):

* ``convB_L``: the convolution's output **before** its ReLU. ESRGAN argues for this (activations
  after ReLU are sparse and lose brightness information); ``conv5_4`` is ``features[34]``, the
  output of ESRGAN's ``vgg19.features[:35]``.
* ``reluB_L``: after the ReLU (SRGAN's original "VGG54" definition is ``relu5_4``).
* an ``int`` selects ``features[i]`` directly.

Weights are looked up in this order: an explicit ``weights_path`` (the loss term's ``weights_path`` key, e.g. ``loss.1.weights_path=PATH``);
``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth`` (the cache torchvision itself uses); otherwise the
file is downloaded from download.pytorch.org into that cache (``torch.hub.download_url_to_file``, which
checks the SHA-256 prefix in the file name and writes atomically). Files are read with
``weights_only=True`` (no arbitrary unpickling) or as safetensors.

Backbone. The perceptual and style terms take ``backbone: vgg19`` (the default, described above) or
``backbone: efficientnet-lite0``: ImageNet EfficientNet-Lite0 features (:mod:`superres.backbones`),
whose weights file comes with the ``superres[perceptual]`` extra, so such a term works offline with
nothing downloaded. Its layers are the stage names ``stem``, ``stage1`` .. ``stage7``, ``head``; the
defaults are ``{stage5: 1.0}`` for the perceptual term (stride 16, as VGG19's conv5_4) and ``stem,
stage2, stage3, stage4`` for the style term; ``weights_path`` then names an EfficientNet-Lite0 file
(``build_loss(vgg_weights=...)`` fills only VGG19 terms). E.g.
``{type: perceptual, weight: 0.01, backbone: efficientnet-lite0, layers: {stage4: 1.0, stage5: 1.0}}``.

Style loss (Gatys et al. 2016; used for texture in EnhanceNet and BasicSR): distance between the Gram
matrices of VGG19 feature maps, ``G = F F^T / (C H W)`` for features ``F`` of shape ``C x HW``. The
Gram matrix keeps which channels fire together and drops where, so it rewards texture statistics
rather than pixel alignment. Normalising by ``C H W`` makes its scale independent of patch size and
layer width.

Adversarial terms. A config's loss list may hold one ``{type: adversarial, weight: 5e-3, kind: ragan}``
term. It cannot be a ``(sr, hr)`` module like the others, because it needs the discriminator's logits
and a discriminator that is trained alongside. So :func:`build_loss` refuses it, and the trainer
separates it first with :func:`split_adversarial`, which returns the content terms (for
:func:`build_loss`) and the adversarial term as its weight and an :class:`AdversarialLoss`.
:mod:`superres.training.gan` then adds ``weight * AdversarialLoss.generator_loss(D(sr), D(hr))`` to
the generator's loss and trains the discriminator with ``AdversarialLoss.discriminator_loss``. ``kind`` is one of ``vanilla`` (SRGAN),
``lsgan``, ``ragan`` (ESRGAN) and ``hinge``; :class:`AdversarialLoss` gives the formulas.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import L1Loss, MSELoss

from superres.backbones import EfficientNetFeatures, read_state_dict, resolve_hub_weights
from superres.color import Y_COEFFS
from superres.errors import SuperresError

__all__ = [
    "L1Loss",
    "MSELoss",
    "CharbonnierLoss",
    "LumaLoss",
    "PIXEL_SPACES",
    "VGGFeatures",
    "FEATURE_BACKBONES",
    "PerceptualLoss",
    "GramStyleLoss",
    "gram_matrix",
    "AdversarialLoss",
    "ADVERSARIAL_KINDS",
    "CombinedLoss",
    "build_loss",
    "TERMS",
    "term_options",
    "split_adversarial",
    "resolve_vgg19_weights",
    "vgg19_layer_index",
    "VGG19_URL",
    "VGG19_FILENAME",
]

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"
# torchvision's cfg "E": conv widths, "M" = 2x2 max pool.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- pixel losses
class CharbonnierLoss(nn.Module):
    """``mean(sqrt((sr - hr)^2 + eps^2))``: a differentiable L1 (LapSRN, Lai et al. 2017).

    Near zero error it behaves like a scaled L2 (smooth gradient), elsewhere like L1 (robust to
    outliers). Its minimum, at ``sr == hr``, is ``eps``, not 0; only the gradient matters for training.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        diff = sr - hr
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()


#: BT.601 luma weights for RGB in [0, 1]: the Y that PSNR-Y scores (superres.metrics), without its
#: constant offset and scaled to [0, 1].
_LUMA = tuple(c / 255.0 for c in Y_COEFFS)
PIXEL_SPACES = ("all", "y")


class LumaLoss(nn.Module):
    """A pixel criterion applied to the luma (BT.601 Y) of RGB images: the quantity PSNR-Y scores.

    Gray images (1 channel) are their own luma. Other channel counts have no luma and are refused.
    Useful for models whose output differs from a fixed base only in luma (``lumanet``), where an
    RGB loss would weigh the three channels' errors instead of the Y error the benchmark measures.
    """

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.criterion = criterion
        self.register_buffer("weights", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def _luma(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        if x.shape[1] != 3:
            raise SuperresError(f"loss with space: y needs RGB or gray images, got {x.shape[1]} channels; use space: all")
        return (x * self.weights.to(x.dtype)).sum(dim=1, keepdim=True)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.criterion(self._luma(sr), self._luma(hr))


def _pixel(space: str, criterion: Callable[[], nn.Module]) -> nn.Module:
    """``criterion()`` on ``all`` channels, or on the luma (``y``, :class:`LumaLoss`)."""
    if space not in PIXEL_SPACES:
        raise ValueError(f"space must be one of {', '.join(PIXEL_SPACES)}, got {space!r}")
    module = criterion()
    return module if space == "all" else LumaLoss(module)


# The pixel terms' builders: their keyword arguments are the term's options (see TERMS).
def l1_term(space: str = "all") -> nn.Module:
    """The ``l1`` term: mean absolute error over all channels (default) or the luma (``space: y``)."""
    return _pixel(space, L1Loss)


def mse_term(space: str = "all") -> nn.Module:
    """The ``mse`` term: mean squared error over all channels (default) or the luma (``space: y``)."""
    return _pixel(space, MSELoss)


def charbonnier_term(eps: float = 1e-3, space: str = "all") -> nn.Module:
    """The ``charbonnier`` term: :class:`CharbonnierLoss` over all channels (default) or the luma."""
    return _pixel(space, functools.partial(CharbonnierLoss, eps))


# --------------------------------------------------------------------------- VGG19 features
def _vgg19_names() -> list[str]:
    """Names of torchvision's ``vgg19().features`` modules by index (conv1_1, relu1_1, ..., pool5)."""
    out: list[str] = []
    block, layer = 1, 1
    for item in VGG19_CFG:
        if item == "M":
            out.append(f"pool{block}")
            block, layer = block + 1, 1
        else:
            out += [f"conv{block}_{layer}", f"relu{block}_{layer}"]
            layer += 1
    return out


VGG19_LAYER_NAMES: tuple[str, ...] = tuple(_vgg19_names())


def vgg19_layer_index(layer: str | int) -> int:
    """Index in ``vgg19().features`` of a layer given by name (``"conv5_4"``) or index (``34``)."""
    if isinstance(layer, bool):
        raise SuperresError(f"perceptual loss: layer must be a name like 'conv5_4' or an index, got {layer!r}")
    if isinstance(layer, int):
        if not 0 <= layer < len(VGG19_LAYER_NAMES):
            raise SuperresError(f"perceptual loss: layer index {layer} out of range 0..{len(VGG19_LAYER_NAMES) - 1}")
        return layer
    if isinstance(layer, str) and layer.isdigit():
        return vgg19_layer_index(int(layer))
    try:
        return VGG19_LAYER_NAMES.index(layer)
    except ValueError:
        raise SuperresError(
            f"perceptual loss: unknown VGG19 layer {layer!r}; use convB_L, reluB_L (B 1..5) or poolB, e.g. 'conv5_4'"
        ) from None


def resolve_vgg19_weights(weights_path: str | Path | None = None) -> Path:
    """Find (or download) the VGG19 weights file; see the module docstring for the order."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise SuperresError(f"VGG19 weights_path: file not found: {path}")
        return path
    return resolve_hub_weights(VGG19_FILENAME, VGG19_URL, "VGG19",
                               "the loss term's weights_path (e.g. loss.1.weights_path=PATH)", progress=True)


class VGGFeatures(nn.Module):
    """Frozen VGG19 ``features`` up to the deepest requested layer; returns those layers' outputs.

    Input: ``N x C x H x W`` in [0, 1] with C = 1 (repeated to RGB) or 3; it is normalised with the
    ImageNet mean/std the weights were trained with. Output: list of feature maps in ``layers`` order.
    """

    def __init__(self, layers: Sequence[str | int], weights_path: str | Path | None = None) -> None:
        super().__init__()
        if not layers:
            raise SuperresError("perceptual loss: no VGG19 layers requested")
        self.indices = [vgg19_layer_index(layer) for layer in layers]
        deepest = max(self.indices)
        modules: list[nn.Module] = []
        in_ch = 3
        for item in VGG19_CFG:
            if len(modules) > deepest:
                break
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                # Not inplace: a "convB_L" output captured before its ReLU must not be overwritten.
                # Built on the meta device: no time spent on a random init the file overwrites.
                conv = nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1, device="meta")
                modules += [conv, nn.ReLU(inplace=False)]
                in_ch = int(item)
        self.features = nn.Sequential(*modules[: deepest + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.weights_file = resolve_vgg19_weights(weights_path)
        self._load(self.weights_file)
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        state = read_state_dict(path, "VGG19")
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise SuperresError(f"{path}: not a torchvision VGG19 weights file (missing {missing[0]})")
        for key, tensor in own.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise SuperresError(
                    f"{path}: {key} has shape {tuple(state[key].shape)}, VGG19 needs {tuple(tensor.shape)}"
                )
        # The file also holds deeper layers and the classifier; only the built layers are taken.
        # assign=True replaces the meta tensors; float32 whatever the file stores (e.g. fp16).
        tensors = {k: state[k].to(torch.float32).contiguous() for k in own}
        self.load_state_dict(tensors, strict=True, assign=True)

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Always stays in eval mode: the loss network is fixed, whatever the trainer switches."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        channels = x.shape[1]
        if channels == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels != 3:
            raise SuperresError(
                f"perceptual loss needs 1- or 3-channel images, got {channels} channels; "
                "VGG19 is an RGB network - use pixel losses (l1, mse, charbonnier) for multi-band data"
            )
        h = (x - self.mean) / self.std
        wanted = set(self.indices)
        found: dict[int, torch.Tensor] = {}
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                found[i] = h
        return [found[i] for i in self.indices]


#: Feature networks of the perceptual and style terms (their ``backbone`` key).
FEATURE_BACKBONES: tuple[str, ...] = ("vgg19", "efficientnet-lite0")

_CRITERIA: dict[str, Callable[[], nn.Module]] = {"l1": L1Loss, "mse": MSELoss, "charbonnier": CharbonnierLoss}


class PerceptualLoss(nn.Module):
    """``sum_l w_l * criterion(VGG_l(sr), VGG_l(hr))`` over the requested VGG19 layers.

    ``layers`` maps layer names/indices to weights (a list means weight 1 each); the default,
    ``{"conv5_4": 1.0}`` with L1, is ESRGAN's. HR features are computed without gradient; SR features
    carry gradient back to the SR image, never into the (frozen) VGG weights.
    """

    def __init__(
        self,
        layers: Mapping[str | int, float] | Sequence[str | int] | None = None,
        criterion: str = "l1",
        weights_path: str | Path | None = None,
        backbone: str = "vgg19",
    ) -> None:
        super().__init__()
        default = {"conv5_4": 1.0} if backbone == "vgg19" else {"stage5": 1.0}
        _init_vgg_term(self, "perceptual loss", default if layers is None else layers, criterion, weights_path, backbone)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_feats = self.vgg(sr)
        with torch.no_grad():
            hr_feats = self.vgg(hr)
        total = sr.new_zeros(())
        for weight, fs, fh in zip(self.layer_weights, sr_feats, hr_feats):
            total = total + weight * self.criterion(fs, fh)
        return total


def _init_vgg_term(
    term: nn.Module,
    what: str,
    layers: Mapping[str | int, float] | Sequence[str | int],
    criterion: str,
    weights_path: str | Path | None,
    backbone: str = "vgg19",
) -> None:
    """The set-up shared by the feature losses: per-layer weights (a list means weight 1 each), the
    frozen ``backbone`` (:data:`FEATURE_BACKBONES`) truncated after the deepest layer, kept as
    ``term.vgg`` whichever it is, and the criterion."""
    if backbone not in FEATURE_BACKBONES:
        raise SuperresError(f"{what}: unknown backbone {backbone!r}; choose {', '.join(FEATURE_BACKBONES)}")
    if not isinstance(layers, Mapping):
        layers = {layer: 1.0 for layer in layers}
    if criterion not in _CRITERIA:
        raise SuperresError(f"{what}: unknown criterion {criterion!r}; choose {', '.join(_CRITERIA)}")
    term.layer_weights = [float(w) for w in layers.values()]
    if backbone == "vgg19":
        term.vgg = VGGFeatures(list(layers.keys()), weights_path)
    else:
        term.vgg = EfficientNetFeatures([str(k) for k in layers.keys()], weights_path)
    term.criterion = _CRITERIA[criterion]()


# --------------------------------------------------------------------------- style loss
def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``N x C x H x W`` features -> ``N x C x C`` Gram matrices ``F F^T / (C H W)``, ``F`` = ``C x HW``.

    Entry ``(i, j)`` is the mean over positions of ``F_i * F_j`` divided by ``C``: how strongly
    channels i and j respond together, wherever in the image that happens.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / float(c * h * w)


class GramStyleLoss(nn.Module):
    """``sum_l w_l * criterion(gram(VGG_l(sr)), gram(VGG_l(hr)))`` over the requested VGG19 layers.

    ``layers`` maps layer names/indices to weights (a list means weight 1 each); the default is one
    ReLU output per block up to block 4 (``relu1_2, relu2_2, relu3_4, relu4_4``), the VGG19
    counterpart of Johnson et al.'s style layers. Weights are found as for :class:`PerceptualLoss`
    (``weights_path``, then the torch hub cache). Gram matrices are computed in float32.
    """

    DEFAULT_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
    EFFNET_DEFAULT_LAYERS: tuple[str, ...] = ("stem", "stage2", "stage3", "stage4")

    def __init__(
        self,
        layers: Mapping[str | int, float] | Sequence[str | int] | None = None,
        criterion: str = "l1",
        weights_path: str | Path | None = None,
        backbone: str = "vgg19",
    ) -> None:
        super().__init__()
        default = self.DEFAULT_LAYERS if backbone == "vgg19" else self.EFFNET_DEFAULT_LAYERS
        _init_vgg_term(self, "style loss", default if layers is None else layers, criterion, weights_path, backbone)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_feats = self.vgg(sr.float())
        with torch.no_grad():
            hr_feats = self.vgg(hr.float())
        total = sr.new_zeros((), dtype=torch.float32)
        for weight, fs, fh in zip(self.layer_weights, sr_feats, hr_feats):
            total = total + weight * self.criterion(gram_matrix(fs.float()), gram_matrix(fh.float()))
        return total


# --------------------------------------------------------------------------- adversarial loss
ADVERSARIAL_KINDS: tuple[str, ...] = ("vanilla", "lsgan", "ragan", "hinge")


class AdversarialLoss:
    """GAN objectives on raw discriminator logits ``r = D(hr)`` and ``f = D(sr)`` (any shape, usually N x 1).

    With ``sp(x) = log(1 + e^x)`` (so BCE-with-logits is ``sp(-x)`` for target 1 and ``sp(x)`` for
    target 0) and ``E`` the mean over the batch:

    =========  ==========================================  ============================================
    kind       generator_loss(f, r)                        discriminator_loss(r, f)
    =========  ==========================================  ============================================
    vanilla    ``E sp(-f)`` (non-saturating, SRGAN)        ``(E sp(-r) + E sp(f)) / 2``
    lsgan      ``E (f - 1)^2``                             ``(E (r - 1)^2 + E f^2) / 2``
    ragan      ``(E sp(r - E f) + E sp(-(f - E r))) / 2``  ``(E sp(-(r - E f)) + E sp(f - E r)) / 2``
    hinge      ``-E f``                                    ``(E max(0, 1 - r) + E max(0, 1 + f)) / 2``
    =========  ==========================================  ============================================

    ``ragan`` is ESRGAN's relativistic average GAN (Wang et al. 2018, eq. 1-2, after
    Jolicoeur-Martineau 2018): the discriminator estimates whether a real image is more realistic
    than the average fake one, and the generator gets gradient from both the fake and the real
    terms. The two terms are averaged, as in ESRGAN's released code, so that its published weight
    (5e-3) applies as is. The batch means inside it are not detached: the discriminator is trained
    on the relativistic objective as written. Only ``ragan``'s generator loss needs ``real_logits``.
    The trainer computes them with the discriminator frozen and passes them detached.

    Discriminator losses are the mean of their real and fake halves for every kind. A discriminator
    that cannot tell real from fake (all logits 0) then reports ``log 2 = 0.693`` (vanilla, ragan),
    ``0.5`` (lsgan) or ``1`` (hinge). Adam is invariant to this constant factor, so it affects only
    the logged value.
    """

    def __init__(self, kind: str = "vanilla") -> None:
        if kind not in ADVERSARIAL_KINDS:
            raise SuperresError(f"adversarial loss: unknown kind {kind!r}; choose {', '.join(ADVERSARIAL_KINDS)}")
        self.kind = kind

    @property
    def needs_real_for_generator(self) -> bool:
        """Whether :meth:`generator_loss` uses the real logits (only the relativistic kind does)."""
        return self.kind == "ragan"

    def generator_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's loss: low when the discriminator takes ``fake_logits`` for real."""
        f = fake_logits.float()
        if self.kind == "vanilla":
            return F.softplus(-f).mean()
        if self.kind == "lsgan":
            return (f - 1.0).pow(2).mean()
        if self.kind == "hinge":
            return -f.mean()
        if real_logits is None:
            raise ValueError("the ragan generator loss needs real_logits")
        r = real_logits.float()
        return 0.5 * (F.softplus(r - f.mean()).mean() + F.softplus(-(f - r.mean())).mean())

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss: low when real logits are high and fake logits low."""
        r, f = real_logits.float(), fake_logits.float()
        if self.kind == "vanilla":
            return 0.5 * (F.softplus(-r).mean() + F.softplus(f).mean())
        if self.kind == "lsgan":
            return 0.5 * ((r - 1.0).pow(2).mean() + f.pow(2).mean())
        if self.kind == "hinge":
            return 0.5 * (F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean())
        return 0.5 * (F.softplus(-(r - f.mean())).mean() + F.softplus(f - r.mean()).mean())

    def __repr__(self) -> str:
        return f"AdversarialLoss(kind={self.kind!r})"


# --------------------------------------------------------------------------- combined loss
#: The loss terms by config ``type``: one explicit dict name -> builder, as for models
#: (:data:`superres.models.registry.REGISTRY`). A builder is a class or function whose keyword
#: arguments are the term's options (the keys a config term may give besides ``type`` and
#: ``weight``); :func:`build_loss` reads them from its signature.
TERMS: dict[str, Callable[..., nn.Module]] = {
    "l1": l1_term,
    "mse": mse_term,
    "charbonnier": charbonnier_term,
    "perceptual": PerceptualLoss,
    "style": GramStyleLoss,
}
#: Terms that read VGG19 weights: ``build_loss(vgg_weights=...)`` fills their ``weights_path``.
_VGG_TERMS = ("perceptual", "style")


class CombinedLoss(nn.Module):
    """Weighted sum of loss terms; ``forward(sr, hr)`` returns the total.

    After each forward, :attr:`last_values` gives every term's unweighted value by name (``"l1"``,
    ``"perceptual"``; a repeated type gets ``"l1#2"``) for logging. The values are kept as detached
    tensors and turned into floats only when read, so logging does not force a GPU sync every step.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise SuperresError("loss: no terms given")
        self.term_names = [name for name, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([module for _, _, module in terms])
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        total = sr.new_zeros(())
        last: dict[str, torch.Tensor] = {}
        for name, weight, term in zip(self.term_names, self.weights, self.terms):
            value = term(sr, hr)
            last[name] = value.detach()
            total = total + weight * value
        self._last = last
        return total

    @property
    def last_values(self) -> dict[str, float]:
        """Unweighted value of each term at the last forward (empty before the first)."""
        return {name: float(value) for name, value in self._last.items()}


def term_options(builder: Callable[..., nn.Module]) -> tuple[str, ...] | None:
    """The options of a loss term's builder: its keyword arguments, in signature order (None when
    it takes ``**kwargs``, i.e. any key)."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in keyword and p.name not in ("self", "type", "weight"))


def build_loss(terms: Sequence[Mapping[str, Any]], *, vgg_weights: str | Path | None = None) -> CombinedLoss:
    """Build the weighted loss from config terms, e.g.
    ``[{"type": "l1", "weight": 1.0}, {"type": "perceptual", "weight": 0.01, "layers": {"conv5_4": 1.0}}]``.

    ``weight`` defaults to 1. ``vgg_weights`` is the weights file for perceptual and style terms that
    do not name their own ``weights_path``. An unknown ``type`` or key raises :class:`SuperresError`
    naming it; so does an ``adversarial`` term (take it out with :func:`split_adversarial`).
    """
    built: list[tuple[str, float, nn.Module]] = []
    seen: dict[str, int] = {}
    for i, term in enumerate(terms):
        if not isinstance(term, Mapping) or "type" not in term:
            raise SuperresError(f"loss term {i + 1}: expected a mapping with a 'type' key, got {term!r}")
        kind = term["type"]
        if kind == "adversarial":
            raise SuperresError(
                f"loss term {i + 1} (adversarial): needs a discriminator, so it is not built here; "
                "pass the terms through split_adversarial() first (the trainer does)"
            )
        if kind not in TERMS:
            known = ", ".join((*TERMS, "adversarial"))
            raise SuperresError(f"loss term {i + 1}: unknown type {kind!r}; known types: {known}")
        builder = TERMS[kind]
        accepted = term_options(builder)
        kwargs = {k: v for k, v in term.items() if k not in ("type", "weight")}
        for key in kwargs:
            if accepted is not None and key not in accepted:
                allowed = ", ".join(("type", "weight") + accepted)
                raise SuperresError(f"loss term {i + 1} ({kind}): unknown key {key!r}; allowed keys: {allowed}")
        if (kind in _VGG_TERMS and kwargs.get("backbone", "vgg19") == "vgg19"
                and kwargs.get("weights_path") is None and vgg_weights is not None):
            kwargs["weights_path"] = vgg_weights
        try:
            weight = float(term.get("weight", 1.0))
        except (TypeError, ValueError):
            raise SuperresError(f"loss term {i + 1} ({kind}): weight must be a number, got {term['weight']!r}") from None
        try:
            module = builder(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SuperresError(f"loss term {i + 1} ({kind}): {exc}") from exc
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
        built.append((name, weight, module))
    return CombinedLoss(built)


def split_adversarial(
    terms: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], tuple[float, AdversarialLoss] | None]:
    """Separate the config's loss list into the content terms (for :func:`build_loss`) and the
    adversarial term, returned as ``(weight, AdversarialLoss(kind))``, or None when there is none.

    The adversarial term takes the keys ``type``, ``weight`` and ``kind``, and ``weight`` must be
    given: the default weight of 1 suits content terms but would swamp them here (typical values
    are 1e-3 for SRGAN and 5e-3 for ESRGAN). At most one adversarial term is allowed, and at least
    one content term must remain, because a generator trained only to fool the discriminator has no
    reason to keep the image's content.
    """
    content: list[Mapping[str, Any]] = []
    adversarial: tuple[float, AdversarialLoss] | None = None
    for i, term in enumerate(terms):
        if not isinstance(term, Mapping) or term.get("type") != "adversarial":
            content.append(term)
            continue
        where = f"loss term {i + 1} (adversarial)"
        if adversarial is not None:
            raise SuperresError(f"{where}: only one adversarial term is allowed (there is one discriminator)")
        unknown = [k for k in term if k not in ("type", "weight", "kind")]
        if unknown:
            raise SuperresError(f"{where}: unknown key {unknown[0]!r}; allowed keys: type, weight, kind")
        if "weight" not in term:
            raise SuperresError(f"{where}: give its weight explicitly (typically 1e-3 to 5e-3)")
        if term.get("kind") not in ADVERSARIAL_KINDS:
            got = f", got {term['kind']!r}" if "kind" in term else ""
            raise SuperresError(f"{where}: 'kind' must be one of {', '.join(ADVERSARIAL_KINDS)}{got}")
        weight = term["weight"]
        if isinstance(weight, str):
            try:
                weight = float(weight)
            except ValueError:
                pass
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise SuperresError(f"{where}: weight must be a number > 0, got {term['weight']!r}")
        adversarial = (float(weight), AdversarialLoss(str(term["kind"])))
    if adversarial is not None and not content:
        raise SuperresError(
            "loss: an adversarial term needs at least one content term (l1, mse, charbonnier, perceptual, style)"
        )
    return content, adversarial
