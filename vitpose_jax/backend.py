"""Choices that depend on the device a model runs on, made where the model is built for it.

The model itself never looks at the host (:class:`vitpose_jax.models.Kernels`): ``model.json``
keeps the portable request (``attention='auto'``) and the trainer and the predictor turn it into
the kernels of their device here, so one checkpoint traces to the same program on every machine
given the same device, and a model trained on an accelerator loads on a CPU.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from vitpose_jax import models


def cudnn_attention_applies(config: models.ModelConfig, device: Any) -> bool:
  """Whether cuDNN's fused attention runs ``config``'s attention on ``device`` (a jax.Device, or
  anything with its ``platform`` and, for GPUs, ``compute_capability``): an NVIDIA GPU of compute
  capability >= 8.0, a bfloat16/float16 model and a head width that is a multiple of 8 up to
  128."""
  capability = getattr(device, 'compute_capability', None)
  head_dim = config.width // config.num_heads
  return (device.platform == 'gpu' and capability is not None and float(capability) >= 8.0
          and jnp.dtype(config.dtype) in (jnp.bfloat16, jnp.float16)
          and head_dim % 8 == 0 and head_dim <= 128)


def resolve_kernels(config: models.ModelConfig, device: Any) -> models.Kernels:
  """The kernels ``config`` runs with on ``device`` (see :func:`cudnn_attention_applies` for what
  ``device`` may be).

  Attention: ``config.attention`` 'auto' takes cuDNN's fused kernel where it applies and XLA's
  otherwise; 'xla' and 'cudnn' are kept, and 'cudnn' where it does not apply is a
  ModelConfigError naming the device. The factorized MLP joins its kernels on accelerators and its
  outputs on CPU, each the faster form where it was measured
  (:class:`vitpose_jax.models.vit.FactorizedMlp`).
  """
  applies = cudnn_attention_applies(config, device)
  if config.attention == 'cudnn' and not applies:
    raise models.ModelConfigError(
        f"model config: attention 'cudnn' does not run on {device.platform} device {device} with "
        f'dtype {config.dtype} and head width {config.width // config.num_heads} (it needs an '
        "NVIDIA GPU of compute capability >= 8.0, bfloat16/float16 and a head width that is a "
        "multiple of 8 up to 128); use 'auto' or 'xla'")
  use_cudnn = config.attention == 'cudnn' or (config.attention == 'auto' and applies)
  attention = 'cudnn' if use_cudnn else 'xla'
  return models.Kernels(attention=attention, joined_mlp_kernels=device.platform != 'cpu')
