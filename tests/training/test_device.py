"""Device choice and mixed precision: what `machine.device_type`, `use_amp` and `amp_dtype` do."""

from __future__ import annotations

import pytest
import torch

from config.errors import ConfigError
from training.device import autocast, check_device_options, grad_scaler, select_device


def test_auto_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_an_explicit_device_that_is_absent_is_a_config_error():
    with pytest.raises(ConfigError, match="machine.device_type=cuda but no CUDA device is visible"):
        select_device("cuda")
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda, mps"):
        check_device_options("tpu", "bf16")
    with pytest.raises(ConfigError, match="amp_dtype='fp32'"):
        check_device_options("cpu", "fp32")


def test_bf16_autocast_runs_matmuls_in_bf16_and_off_leaves_fp32():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(torch.device("cpu"), True, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False, "bf16"):
        assert (a @ b).dtype == torch.float32


def test_the_grad_scaler_is_on_only_for_fp16_on_cuda():
    cpu = torch.device("cpu")
    assert not grad_scaler(cpu, True, "fp16").is_enabled()
    assert not grad_scaler(cpu, True, "bf16").is_enabled()
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert grad_scaler(cuda, True, "fp16").is_enabled()
        assert not grad_scaler(cuda, True, "bf16").is_enabled() and not grad_scaler(cuda, False, "fp16").is_enabled()
