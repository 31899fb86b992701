"""Differentiable keypoints from heatmaps, and the silhouette penalty on them.

The pose prior and the silhouette term need keypoint coordinates with gradients; the argmax
decode has none. :func:`soft_argmax` takes the expected position under a softmax of each
heatmap (integral regression, Sun et al. 2018).

Layouts as in :mod:`vitpose_jax.codec`: heatmaps (B, h, w, K); points (x, y) in pixels,
integers at pixel centres; sizes (H, W).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_argmax(heatmaps: jax.Array, beta: float) -> jax.Array:
  """(B, h, w, K) heatmaps → (B, K, 2) expected (x, y) in heatmap pixels under
  ``softmax(beta · heatmap / peak)`` over each map.

  Each map is divided by its own peak (a constant for the gradient) first, so that ``beta`` sets
  how sharp the weights are whatever the model's confidence: a faint map's position is still
  its peak's, not pulled to the middle of the map by the background.
  """
  heatmaps = jnp.asarray(heatmaps, jnp.float32)
  b, h, w, k = heatmaps.shape
  peak = jax.lax.stop_gradient(jnp.max(heatmaps, axis=(1, 2), keepdims=True))
  logits = beta * heatmaps / jnp.maximum(peak, 1e-6)
  weights = jax.nn.softmax(logits.reshape(b, h * w, k), axis=1)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  x = jnp.einsum('bnk,n->bk', weights, xs.reshape(-1))
  y = jnp.einsum('bnk,n->bk', weights, ys.reshape(-1))
  return jnp.stack([x, y], axis=-1)


def heatmap_to_input(points: jax.Array, *, input_size: tuple[int, int],
                     heatmap_size: tuple[int, int]) -> jax.Array:
  """(..., 2) heatmap pixels → input-crop pixels (UDP: first and last pixel centres align)."""
  (in_h, in_w), (hm_h, hm_w) = input_size, heatmap_size
  return points * jnp.array([(in_w - 1) / (hm_w - 1), (in_h - 1) / (hm_h - 1)], jnp.float32)


def _bilinear(image: jax.Array, points: jax.Array) -> jax.Array:
  """(H, W) image at (K, 2) (x, y) points; points outside take the nearest border value, so a
  keypoint beyond the crop still pays at least the distance at the crop's edge."""
  h, w = image.shape
  x = jnp.clip(points[:, 0], 0.0, w - 1.0)
  y = jnp.clip(points[:, 1], 0.0, h - 1.0)
  return jax.scipy.ndimage.map_coordinates(image, [y, x], order=1, mode='nearest')


def silhouette_penalty(keypoints: jax.Array, mask_distance: jax.Array,
                       mask_weight: jax.Array) -> jax.Array:
  """How far keypoints fall outside the person's mask: the distance transform of the mask,
  sampled bilinearly at each keypoint, in units of the crop's height, averaged over the joints
  of the samples that have a mask.

  Zero for keypoints on the mask; outside it, it grows with the distance to the nearest mask
  pixel, and its gradient points toward the mask. A joint hidden behind an occluder lies off the
  visible silhouette and is pulled toward it as well, so the term wants a small weight.

  Args:
    keypoints: (B, K, 2) (x, y) in input-crop pixels (:func:`heatmap_to_input` of
      :func:`soft_argmax`).
    mask_distance: (B, H, W) distance in crop pixels to the nearest mask pixel (0 on the mask).
    mask_weight: (B,) 1 where the sample has a mask.

  Returns:
    The scalar float32 penalty (0 when no sample has a mask).
  """
  mask_distance = jnp.asarray(mask_distance, jnp.float32)
  per_point = jax.vmap(_bilinear)(mask_distance, jnp.asarray(keypoints, jnp.float32))
  per_sample = jnp.mean(per_point, axis=-1) / mask_distance.shape[1]
  weight = jnp.asarray(mask_weight, jnp.float32)
  return jnp.sum(per_sample * weight) / jnp.maximum(jnp.sum(weight), 1.0)
