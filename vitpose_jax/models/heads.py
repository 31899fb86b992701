"""Heatmap heads (docs/design.md): the classic deconvolution decoder, the simple bilinear one and
Sapiens' (deconvolutions and 1×1 convs with InstanceNorm and SiLU).

Input is the backbone's feature map (N, rows, cols, C); output heatmaps (N, 4·rows, 4·cols, K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The official TopdownHeatmapSimpleHead initialises deconvs and the final conv with N(0, .001).
_head_init = jax.nn.initializers.normal(0.001)

# Kernel taps of torch's ConvTranspose2d(k=4, s=2, p=1) that reach output 2m + phase: input m − 1
# through tap 3 and input m through tap 1 (phase 0); input m through tap 2 and m + 1 through tap 0
# (phase 1).
_PHASE_TAPS = ((3, 1), (2, 0))


class Deconv4x2(nnx.Module):
  """torch's ConvTranspose2d(k=4, s=2, p=1, bias=False) as four 2×2 convolutions, one per output
  phase, interleaved (sub-pixel form).

  Same function and the same kernel as ``nnx.ConvTranspose(..., transpose_kernel=True)``
  (layout (4, 4, out, in), torch's (in, out, 4, 4) transposed), but XLA:CPU differentiates a
  transposed convolution's kernel slowly (ViTPose-B's decoder: 11.7 s vs 0.56 s per backward
  pass, batch 8), while plain 2×2 convolutions differentiate at matmul speed.
  """

  def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = nnx.Param(_head_init(rngs.params(), (4, 4, out_features, in_features)))

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    kernel = self.kernel[...].astype(self.dtype)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = []
    for a, row_taps in enumerate(_PHASE_TAPS):
      cols = []
      for b, col_taps in enumerate(_PHASE_TAPS):
        k = kernel[np.array(row_taps)][:, np.array(col_taps)].transpose(0, 1, 3, 2)
        cols.append(jax.lax.conv_general_dilated(
            x[:, a:a + h + 1, b:b + w + 1], k, (1, 1), 'VALID',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
      rows.append(jnp.stack(cols, axis=3))
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, -1)


class ClassicDecoder(nnx.Module):
  """n × (ConvTranspose k4 s2 p1 without bias, BatchNorm, ReLU), then a 1×1 conv to K channels."""

  def __init__(self, in_features: int, num_keypoints: int, *, channels: int = 256,
               num_layers: int = 2, dtype=jnp.float32, rngs: nnx.Rngs):
    deconvs, norms = [], []
    for i in range(num_layers):
      deconvs.append(Deconv4x2(in_features if i == 0 else channels, channels, dtype=dtype,
                               rngs=rngs))
      # torch's BatchNorm momentum 0.1 is flax's 0.9 (weight of the running value).
      norms.append(nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs))
    self.deconv_layers = nnx.List(deconvs)
    self.deconv_norms = nnx.List(norms)
    self.final_layer = nnx.Conv(channels if num_layers else in_features, num_keypoints,
                                kernel_size=(1, 1), kernel_init=_head_init, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    for deconv, norm in zip(self.deconv_layers, self.deconv_norms):
      x = jax.nn.relu(norm(deconv(x), use_running_average=not train))
    return self.final_layer(x)


class SimpleDecoder(nnx.Module):
  """ReLU, bilinear ×4 upsampling (align_corners=False), 3×3 conv to K channels."""

  def __init__(self, in_features: int, num_keypoints: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.final_layer = nnx.Conv(in_features, num_keypoints, kernel_size=(3, 3),
                                padding=((1, 1), (1, 1)), kernel_init=_head_init, dtype=dtype,
                                rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no batch statistics in this head
    n, h, w, c = x.shape
    # jax.image.resize's bilinear uses half-pixel centres, i.e. torch's align_corners=False, and
    # antialiasing only matters when downsampling.
    x = jax.image.resize(jax.nn.relu(x), (n, 4 * h, 4 * w, c), method='bilinear')
    return self.final_layer(x)


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """torch's InstanceNorm2d without affine or running statistics, channels-last: each sample's
  channel normalised over its spatial positions by its biased variance, in float32."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axis=(1, 2), keepdims=True)
  var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class SapiensDecoder(nnx.Module):
  """Sapiens' HeatmapHead (``use_silu``): ``num_layers`` × (ConvTranspose k4 s2 p1 without bias,
  InstanceNorm, SiLU), ``num_convs`` × (1×1 conv with bias, InstanceNorm, SiLU), then a 1×1 conv
  to K channels. Every layer before the last is ``channels`` wide (768 in all released Sapiens
  pose models). InstanceNorm has no weights (affine=False, eps 1e-5) and no batch statistics, so
  training and inference compute the same function."""

  def __init__(self, in_features: int, num_keypoints: int, *, channels: int = 768,
               num_layers: int = 2, num_convs: int = 2, dtype=jnp.float32, rngs: nnx.Rngs):
    self.deconv_layers = nnx.List([
        Deconv4x2(in_features if i == 0 else channels, channels, dtype=dtype, rngs=rngs)
        for i in range(num_layers)])
    width = channels if num_layers else in_features
    self.conv_layers = nnx.List([
        nnx.Conv(width if i == 0 else channels, channels, kernel_size=(1, 1),
                 kernel_init=_head_init, dtype=dtype, rngs=rngs)
        for i in range(num_convs)])
    self.final_layer = nnx.Conv(channels if num_layers or num_convs else in_features,
                                num_keypoints, kernel_size=(1, 1), kernel_init=_head_init,
                                dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # InstanceNorm: the same in training and inference
    for layer in (*self.deconv_layers, *self.conv_layers):
      x = jax.nn.silu(instance_norm(layer(x)))
    return self.final_layer(x)
