"""Training losses: pixel (L1, MSE, Charbonnier), perceptual (VGG19 features), and their weighted sum.

All losses take ``(sr, hr)``, ``N x C x H x W`` float tensors in [0, 1], and return a scalar.

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

Weights are looked up in this order: an explicit ``weights_path`` (config key ``loss.vgg_weights``);
``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth`` (the cache torchvision itself uses); otherwise the
file is downloaded from download.pytorch.org into that cache (``torch.hub.download_url_to_file``, which
checks the SHA-256 prefix in the file name and writes atomically). Files are read with
``weights_only=True`` (no arbitrary unpickling) or as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import L1Loss, MSELoss

from superres.errors import SuperresError

__all__ = [
    "L1Loss",
    "MSELoss",
    "CharbonnierLoss",
    "VGGFeatures",
    "PerceptualLoss",
    "CombinedLoss",
    "build_loss",
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
            raise SuperresError(f"loss.vgg_weights: file not found: {path}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(VGG19_URL, str(cached), hash_prefix=VGG19_FILENAME.split("-")[1][:8])
    except Exception as exc:  # offline, proxy, disk full, hash mismatch: all end the same way for the user
        reason = str(exc) or type(exc).__name__
        raise SuperresError(
            f"VGG19 weights not found: looked for {cached} and could not download {VGG19_URL} ({reason}); "
            f"download {VGG19_FILENAME} and pass it with loss.vgg_weights=PATH"
        ) from exc
    return cached


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors by suffix, otherwise ``torch.load(weights_only=True)``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SuperresError(f"{path}: cannot read VGG19 weights ({exc})") from exc
    if not isinstance(state, Mapping):
        raise SuperresError(f"{path}: not a state dict (found {type(state).__name__})")
    return dict(state)


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
        state = _read_state_dict(path)
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
    ) -> None:
        super().__init__()
        if layers is None:
            layers = {"conv5_4": 1.0}
        if not isinstance(layers, Mapping):
            layers = {layer: 1.0 for layer in layers}
        if criterion not in _CRITERIA:
            raise SuperresError(f"perceptual loss: unknown criterion {criterion!r}; choose {', '.join(_CRITERIA)}")
        self.layer_weights = [float(w) for w in layers.values()]
        self.vgg = VGGFeatures(list(layers.keys()), weights_path)
        self.criterion = _CRITERIA[criterion]()

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_feats = self.vgg(sr)
        with torch.no_grad():
            hr_feats = self.vgg(hr)
        total = sr.new_zeros(())
        for weight, fs, fh in zip(self.layer_weights, sr_feats, hr_feats):
            total = total + weight * self.criterion(fs, fh)
        return total


# --------------------------------------------------------------------------- combined loss
# type -> (builder, keys it accepts besides "type" and "weight")
_TERMS: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "l1": (L1Loss, ()),
    "mse": (MSELoss, ()),
    "charbonnier": (CharbonnierLoss, ("eps",)),
    "perceptual": (PerceptualLoss, ("layers", "criterion", "weights_path")),
}


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


def build_loss(terms: Sequence[Mapping[str, Any]], *, vgg_weights: str | Path | None = None) -> CombinedLoss:
    """Build the weighted loss from config terms, e.g.
    ``[{"type": "l1", "weight": 1.0}, {"type": "perceptual", "weight": 0.01, "layers": {"conv5_4": 1.0}}]``.

    ``weight`` defaults to 1. ``vgg_weights`` (config ``loss.vgg_weights``) is the weights file for
    perceptual terms that do not name their own ``weights_path``. An unknown ``type`` or key raises
    :class:`SuperresError` naming it.
    """
    built: list[tuple[str, float, nn.Module]] = []
    seen: dict[str, int] = {}
    for i, term in enumerate(terms):
        if not isinstance(term, Mapping) or "type" not in term:
            raise SuperresError(f"loss term {i + 1}: expected a mapping with a 'type' key, got {term!r}")
        kind = term["type"]
        if kind not in _TERMS:
            raise SuperresError(f"loss term {i + 1}: unknown type {kind!r}; known types: {', '.join(_TERMS)}")
        builder, accepted = _TERMS[kind]
        kwargs = {k: v for k, v in term.items() if k not in ("type", "weight")}
        for key in kwargs:
            if key not in accepted:
                allowed = ", ".join(("type", "weight") + accepted)
                raise SuperresError(f"loss term {i + 1} ({kind}): unknown key {key!r}; allowed keys: {allowed}")
        if kind == "perceptual" and kwargs.get("weights_path") is None and vgg_weights is not None:
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
