"""superres.devices: one device parser for every command, and the CPU facts recorded beside figures."""

from __future__ import annotations

import pytest
import torch

from superres import devices
from superres.devices import auto_device, cpu_name, resolve_device
from superres.errors import SuperresError


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_the_message_names_the_option_it_came_from() -> None:
    with pytest.raises(SuperresError, match=r"^--device toaster: not a torch device"):
        resolve_device("toaster")
    with pytest.raises(SuperresError, match=r"^train\.device=toaster: not a torch device"):
        resolve_device("toaster", option="train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_absent_cuda_is_refused_before_any_work() -> None:
    with pytest.raises(SuperresError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_cuda_index_is_checked_against_the_devices_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # the last one present
    with pytest.raises(SuperresError, match=r"only 2 CUDA device\(s\) present"):
        resolve_device("cuda:2")  # one past it


def test_unsupported_device_type_is_refused() -> None:
    with pytest.raises(SuperresError, match="unsupported device type 'meta'"):
        resolve_device("meta")


def test_cpu_name_is_a_non_empty_line() -> None:
    name = cpu_name()
    assert name and "\n" not in name
