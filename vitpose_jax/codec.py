"""Heatmap codec: UDP Gaussian targets and the heatmap MSE loss, as pure jit-able JAX functions.

Layouts: keypoints (..., K, 3) are [x, y, w] in input-crop pixels, integer coordinates at pixel
centres, x right, y down. Heatmaps are channels-last, (..., h, w, K), as the heads emit them.
Sizes are (H, W), the project's convention; coordinates are (x, y).

Targets are made on device from the crop keypoints: shipping K maps per sample from the host would
dominate host→device traffic for large schemas (WholeBody: 133 × 64 × 48 floats per sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def udp_targets(
    keypoints: jax.Array,
    *,
    image_size: tuple[int, int] = (256, 192),
    heatmap_size: tuple[int, int] = (64, 48),
    sigma: float = 2.0,
) -> tuple[jax.Array, jax.Array]:
  """UDP Gaussian heatmap targets (Huang et al., CVPR 2020; mmpose 0.x ``_udp_generate_target``).

  A keypoint maps to heatmap coordinates by ``x · (W_hm − 1) / (W_in − 1)`` (likewise y): UDP
  aligns the first and last pixel centres of input and heatmap, so the scale is unbiased. Its map
  is ``exp(−((i − μx)² + (j − μy)²) / (2σ²))`` at integer heatmap pixels (i, j) with the sub-pixel
  μ, truncated like mmpose to the window ``ul ≤ (i, j) < br`` where ``ul = int(round(μ) − 3σ)``,
  ``br = int(round(μ) + 3σ + 1)`` and ``round(μ) = int(μ + 0.5)`` (Python ``int``, toward zero).
  The weight is the input w, set to 0 when that window misses the heatmap (``ul ≥ size`` or
  ``br < 0`` on either axis); maps are zero wherever the weight is not positive.

  For non-integer 3σ mmpose's window centre drifts off μ by its integer arithmetic; here the
  Gaussian stays centred on μ and only the window bounds follow mmpose (identical for σ = 2).

  Args:
    keypoints: (..., K, 3) [x, y, w] in input-crop pixels.
    image_size: model input (H, W).
    heatmap_size: heatmap (h, w).
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    heatmaps (..., h, w, K) float32 and weights (..., K) float32.
  """
  keypoints = jnp.asarray(keypoints, jnp.float32)
  (in_h, in_w), (hm_h, hm_w) = image_size, heatmap_size
  mu_x = keypoints[..., 0] * ((hm_w - 1) / (in_w - 1))
  mu_y = keypoints[..., 1] * ((hm_h - 1) / (in_h - 1))
  radius = 3.0 * sigma

  def axis(mu, size):
    """Truncated 1-D Gaussians (..., K, size) and whether each window meets [0, size)."""
    centre = jnp.trunc(mu + 0.5)
    lo, hi = jnp.trunc(centre - radius), jnp.trunc(centre + radius + 1)
    grid = jnp.arange(size, dtype=jnp.float32)
    in_window = (grid >= lo[..., None]) & (grid < hi[..., None])
    g = jnp.exp(-jnp.square(grid - mu[..., None]) / (2.0 * sigma**2))
    return jnp.where(in_window, g, 0.0), (lo < size) & (hi >= 0)

  gx, meets_x = axis(mu_x, hm_w)
  gy, meets_y = axis(mu_y, hm_h)
  weights = jnp.where(meets_x & meets_y, keypoints[..., 2], 0.0)
  gx = jnp.where(weights[..., None] > 0, gx, 0.0)
  # The 2-D Gaussian is separable, so the (h, w) map is an outer product of the two axes.
  heatmaps = jnp.swapaxes(gy, -1, -2)[..., :, None, :] * jnp.swapaxes(gx, -1, -2)[..., None, :, :]
  return heatmaps, weights


def joints_mse(
    pred: jax.Array,
    target: jax.Array,
    weights: jax.Array,
    joint_weights: Sequence[float] | jax.Array | None = None,
) -> jax.Array:
  """Heatmap MSE with per-keypoint weights: mmpose's ``JointsMSELoss(use_target_weight=True)``.

  mmpose 0.x as ViTPose ships it (``mmpose/models/losses/mse_loss.py``) sums over joints
  ``nn.MSELoss()(pred·w, target·w)`` (mean over batch and pixels) and divides by K, with no 0.5
  factor (the 0.5 of the original HRNet code was dropped): the mean over every sample, pixel and
  joint of ``((pred − target)·w)²``. Samples and joints of weight 0 still count in the mean.

  Args:
    pred: (..., h, w, K) predicted heatmaps.
    target: (..., h, w, K) target heatmaps.
    weights: (..., K) per-keypoint target weights, e.g. from :func:`udp_targets`.
    joint_weights: optional (K,) per-joint loss weights (a schema's ``joint_weights``); they scale
      ``weights`` as mmpose's ``use_different_joint_weights`` does, so they enter squared.

  Returns:
    The scalar float32 loss.
  """
  weights = jnp.asarray(weights, jnp.float32)
  if joint_weights is not None:
    weights = weights * jnp.asarray(joint_weights, jnp.float32)
  diff = (pred.astype(jnp.float32) - target.astype(jnp.float32)) * weights[..., None, None, :]
  return jnp.mean(jnp.square(diff))
