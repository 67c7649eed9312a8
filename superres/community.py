"""Community ``.pth`` weights: ESRGAN, Real-ESRGAN/BasicSR and SRVGGNetCompact state dicts.

:func:`load_pth` reads a ``.pth`` with ``torch.load(..., weights_only=True)`` (a file that needs to run
pickled code to load is refused), unwraps BasicSR's ``{"params_ema": ...}`` / ``{"params": ...}``
wrapper (``params_ema`` preferred, as Real-ESRGAN's own inference does), recognises the layout from
the key names and shapes, renames the keys to ours and loads them strictly into
:class:`~superres.models.rrdbnet.RRDBNet` or :class:`~superres.models.srvgg.SRVGG`.

Layouts (the key names as the published files have them; ``i`` block, ``k`` dense block, ``j`` conv):

==============  ======================================================  ====================
layout          keys                                                    ours
==============  ======================================================  ====================
esrgan-old      ``model.0``; ``model.1.sub.i.RDBk.convj.0``;             conv_first; body...;
                ``model.1.sub.<blocks>``; then ``model.3``, ``model.6``   conv_body; conv_up1/2,
                (upconvs), ``model.8`` (HR), ``model.10`` (last)         conv_hr, conv_last
esrgan          ``conv_first``, ``RRDB_trunk.i.RDBk.convj``,            same order
                ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``
basicsr         ``conv_first``, ``body.i.rdbk.convj``, ``conv_body``,    identical
                ``conv_up1/2``, ``conv_hr``, ``conv_last``
srvgg           ``body.n`` only: 4-D conv weights at even n, 1-D PReLU    identical
                slopes (``body.n.weight``, shape [features]) at odd n
==============  ======================================================  ====================

Inferred from shapes: features (``conv_first`` / ``body.0`` outputs), blocks (the highest block
index + 1), growth (``conv1``'s outputs), channels (``conv_last``'s outputs) and scale: RRDBNet is x4
after a pixel-unshuffle of ``conv_first``'s input channels / output channels (1 -> x4, 4 -> x2);
SRVGG's last conv gives ``channels x scale^2``.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

from superres.errors import SuperresError
from superres.models import build

__all__ = ["LAYOUTS", "read_state_dict", "detect", "load_pth"]

_W = r"\.(weight|bias)"
#: layout name -> regular expression every key of that layout matches
LAYOUTS: dict[str, re.Pattern[str]] = {
    "esrgan-old": re.compile(rf"model\.(0|1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0|1\.sub\.\d+|\d+){_W}"),
    "esrgan": re.compile(rf"(conv_first|RRDB_trunk\.\d+\.RDB[123]\.conv[1-5]|trunk_conv|upconv[12]|HRconv|conv_last){_W}"),
    "basicsr": re.compile(rf"(conv_first|body\.\d+\.rdb[123]\.conv[1-5]|conv_body|conv_up[12]|conv_hr|conv_last){_W}"),
    "srvgg": re.compile(rf"body\.\d+{_W}"),
}
_WRAPPERS = ("params_ema", "params", "state_dict")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str | None]:
    """(state dict, wrapper key or None) of a ``.pth`` file, loaded with ``weights_only=True``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: model file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise SuperresError(
                f"{path}: refused: loading it would run pickled code ({found[1]}; torch.load weights_only=True "
                "allows tensors and plain containers only); superres reads plain tensor state dicts from .pth files"
            ) from None
        detail = re.search(r"(?:WeightsUnpickler|Unpickler) error:\s*([^\n]+)", text)
        reason = " ".join(detail[1].split()) if detail else "not a pickle"
        raise SuperresError(f"{path}: cannot read as PyTorch weights ({reason}: corrupt, or not a .pth file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SuperresError(f"{path}: cannot read as PyTorch weights ({type(exc).__name__}{': ' + text if text else ''})") from None
    wrapper = None
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj, wrapper = obj[key], key
                break
    if not isinstance(obj, Mapping) or not obj:
        raise SuperresError(f"{path}: not a state dict (a {type(obj).__name__}); expected a dict of tensors")
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise SuperresError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}")
    return state, wrapper


def _layout(state: Mapping[str, Any], where: str) -> str:
    """The layout whose key pattern fits every key; else an error naming the keys that fit none."""
    keys = list(state)
    fits = {name: [k for k in keys if pattern.fullmatch(k)] for name, pattern in LAYOUTS.items()}
    if "srvgg" in fits and len(fits["srvgg"]) == len(keys):
        ndims = {int(k.split(".")[1]): state[k].dim() for k in keys if k.endswith(".weight")}
        if ndims.get(0) == 4 and ndims.get(1) == 1:
            return "srvgg"
    for name in ("esrgan-old", "esrgan", "basicsr"):
        if len(fits[name]) == len(keys):
            return name
    best = max(("esrgan-old", "esrgan", "basicsr", "srvgg"), key=lambda n: len(fits[n]))
    unmatched = [k for k in keys if k not in set(fits[best])] if fits[best] else keys
    shown = ", ".join(unmatched[:6]) + (f" (and {len(unmatched) - 6} more)" if len(unmatched) > 6 else "")
    raise SuperresError(
        f"{where}: unrecognised state-dict layout (not ESRGAN, Real-ESRGAN/BasicSR RRDBNet or SRVGGNetCompact); "
        f"keys that match no known layout: {shown}"
    )


def _rename_rrdb(state: Mapping[str, Any], layout: str, where: str) -> dict[str, Any]:
    if layout == "basicsr":
        return dict(state)
    out: dict[str, Any] = {}
    if layout == "esrgan":
        fixed = {"conv_first": "conv_first", "trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2",
                 "HRconv": "conv_hr", "conv_last": "conv_last"}
        for key, value in state.items():
            m = re.fullmatch(r"RRDB_trunk\.(\d+)\.RDB([123])\.(conv[1-5])\.(weight|bias)", key)
            if m:
                out[f"body.{m[1]}.rdb{m[2]}.{m[3]}.{m[4]}"] = value
            else:
                stem, _, leaf = key.rpartition(".")
                out[f"{fixed[stem]}.{leaf}"] = value
        return out
    # esrgan-old: model.0, model.1.sub.<i>.RDB<k>.conv<j>.0, model.1.sub.<blocks> (LR conv), then the
    # remaining top-level convs in index order: upconv x2, HR conv, last conv.
    tail = sorted({int(k.split(".")[1]) for k in state if re.fullmatch(rf"model\.\d+{_W}", k)} - {0})
    if len(tail) != 4:
        raise SuperresError(
            f"{where}: old ESRGAN layout with {len(tail)} convs after the trunk (model.{', model.'.join(map(str, tail))}); "
            "only the x4 generator (two upconvs, HR conv, last conv: model.3/6/8/10) is supported"
        )
    names = dict(zip(tail, ("conv_up1", "conv_up2", "conv_hr", "conv_last")))
    trunk = [int(m[1]) for k in state if (m := re.fullmatch(rf"model\.1\.sub\.(\d+){_W}", k))]
    lr_conv = max(trunk) if trunk else -1
    for key, value in state.items():
        leaf = key.rpartition(".")[2]
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB([123])\.(conv[1-5])\.0\.(weight|bias)", key):
            out[f"body.{m[1]}.rdb{m[2]}.{m[3]}.{m[4]}"] = value
        elif re.fullmatch(rf"model\.1\.sub\.{lr_conv}{_W}", key):
            out[f"conv_body.{leaf}"] = value
        elif key.startswith("model.0."):
            out[f"conv_first.{leaf}"] = value
        else:
            out[f"{names[int(key.split('.')[1])]}.{leaf}"] = value
    return out


def detect(state: Mapping[str, Any], where: str = "state dict") -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(layout, arch, args, our state dict) for a community state dict (module docstring)."""
    layout = _layout(state, where)
    if layout == "srvgg":
        convs = sorted(int(k.split(".")[1]) for k, v in state.items() if k.endswith(".weight") and v.dim() == 4)
        first, last = state[f"body.{convs[0]}.weight"], state[f"body.{convs[-1]}.weight"]
        cin, channels = int(first.shape[1]), int(first.shape[0])
        scale = math.isqrt(int(last.shape[0]) // cin)
        if scale * scale * cin != last.shape[0]:
            raise SuperresError(f"{where}: SRVGG last conv gives {last.shape[0]} channels, not {cin} x scale^2")
        return layout, "srvgg", {"scale": scale, "in_channels": cin, "channels": channels, "blocks": len(convs) - 2}, dict(state)
    ours = _rename_rrdb(state, layout, where)
    for key in ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight"):
        if key not in ours:
            raise SuperresError(f"{where}: {layout} layout without the tensor that becomes {key}")
    first, last = ours["conv_first.weight"], ours["conv_last.weight"]
    cout = int(last.shape[0])
    ratio = int(first.shape[1]) // cout if cout else 0
    scales = {1: 4, 4: 2, 16: 1}
    if ratio * cout != first.shape[1] or ratio not in scales:
        raise SuperresError(f"{where}: conv_first takes {first.shape[1]} channels, conv_last gives {cout}: no RRDBNet scale fits")
    if scales[ratio] == 1:
        raise SuperresError(f"{where}: an x1 RRDBNet (pixel-unshuffle by 4); superres runs x2 and x4 RRDBNets")
    blocks = 1 + max(int(k.split(".")[1]) for k in ours if k.startswith("body."))
    args = {"scale": scales[ratio], "in_channels": cout, "channels": int(first.shape[0]), "blocks": blocks,
            "growth": int(ours["body.0.rdb1.conv1.weight"].shape[0])}
    return layout, "rrdbnet", args, ours


def load_pth(path: str | os.PathLike[str], *, device: Any = "cpu"):
    """A community ``.pth`` as our model (eval mode), with ``superres_meta`` naming its source and layout."""
    path = Path(path)
    state, wrapper = read_state_dict(path)
    layout, arch, args, ours = detect(state, str(path))
    try:
        model = build(arch, **args)
    except SuperresError as exc:
        raise SuperresError(f"{path}: {exc}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in ours]
    unexpected = [k for k in ours if k not in own]
    wrong = [k for k in own if k in ours and tuple(ours[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:4]))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:4]))
        if wrong:
            parts.append(f"{wrong[0]} is {tuple(ours[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in {arch}")
        raise SuperresError(f"{path}: {layout} layout does not fit {arch} {args}: {'; '.join(parts)}")
    model.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    model.superres_meta = {
        "format": 1, "arch": arch, "args": args, "scale": args["scale"], "in_channels": args["in_channels"],
        "value_range": [0, 1], "params": sum(p.numel() for p in model.parameters()),
        "source": str(path), "source_format": "pth", "source_layout": layout + (f" ({wrapper})" if wrapper else ""),
    }
    return model.to(device).eval()
