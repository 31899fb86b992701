"""Heatmap heads (DESIGN §5): the classic deconvolution decoder and the simple bilinear one.

Input is the backbone's feature map (N, rows, cols, C); output heatmaps (N, 4·rows, 4·cols, K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# The official TopdownHeatmapSimpleHead initialises deconvs and the final conv with N(0, .001).
_head_init = jax.nn.initializers.normal(0.001)


class ClassicDecoder(nnx.Module):
  """n × (ConvTranspose k4 s2 p1 without bias, BatchNorm, ReLU), then a 1×1 conv to K channels."""

  def __init__(self, in_features: int, num_keypoints: int, *, channels: int = 256,
               num_layers: int = 2, dtype=jnp.float32, rngs: nnx.Rngs):
    deconvs, norms = [], []
    for i in range(num_layers):
      # torch's padding p=1 on a k=4 transposed conv equals lax padding k − 1 − p = 2 per side;
      # transpose_kernel makes it the gradient of a conv, which is what torch computes.
      deconvs.append(nnx.ConvTranspose(
          in_features if i == 0 else channels, channels, kernel_size=(4, 4), strides=(2, 2),
          padding=((2, 2), (2, 2)), use_bias=False, transpose_kernel=True,
          kernel_init=_head_init, dtype=dtype, rngs=rngs,
      ))
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
