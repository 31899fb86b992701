"""Mean-teacher consistency between two views of one crop (SHIFT; Tarvainen & Valpola 2017).

The teacher is an exponential moving average of the student's weights (:func:`ema_update`). It
sees a weakly augmented view of a person crop, the student a strongly augmented view of the same
crop; :class:`vitpose_jax.data.transforms.TwoViews` gives both, with ``view_transform``, the
affine from weak-view to strong-view crop pixels, and ``view_flip``, 1 where exactly one view is
mirrored. :func:`map_heatmaps` carries the teacher's heatmaps into the student's crop through that
affine, swapping left and right channels where the views disagree on the mirror, and
:func:`consistency_loss` takes the heatmap MSE to them on the joints the teacher is confident of.

Layouts as in :mod:`vitpose_jax.codec`: heatmaps channels-last (B, h, w, K); points (x, y) in
pixels, integers at pixel centres; sizes (H, W).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vitpose_jax import codec
from vitpose_jax.adapt import keypoints


def ema_update(teacher, student, decay: float | jax.Array):
  """The teacher's next weights, ``decay · teacher + (1 − decay) · student`` per leaf
  (``optax.incremental_update`` with step size ``1 − decay``). Both are pytrees of one
  structure (parameters, or BatchNorm statistics)."""
  return optax.incremental_update(student, teacher, 1.0 - decay)


def crop_to_heatmap_transform(view_transform: jax.Array, *, input_size: tuple[int, int],
                              heatmap_size: tuple[int, int]) -> jax.Array:
  """An affine between two input crops (..., 3, 3), in crop pixels, as the affine between their
  heatmaps, in heatmap pixels: UDP scales crop to heatmap by ``(w − 1) / (W − 1)`` on x and
  ``(h − 1) / (H − 1)`` on y (see :func:`vitpose_jax.codec.udp_targets`)."""
  (in_h, in_w), (hm_h, hm_w) = input_size, heatmap_size
  scale = jnp.diag(jnp.array([(hm_w - 1) / (in_w - 1), (hm_h - 1) / (in_h - 1), 1.0],
                             jnp.float32))
  inverse = jnp.diag(1.0 / jnp.diag(scale))
  return scale @ jnp.asarray(view_transform, jnp.float32) @ inverse


def map_heatmaps(heatmaps: jax.Array, transform: jax.Array, view_flip: jax.Array,
                 flip_index: Sequence[int]) -> jax.Array:
  """The teacher's heatmaps as the student's crop sees them.

  Student pixel p takes the teacher's value at ``transform⁻¹ · p``, sampled bilinearly (zero
  outside the teacher's map); where ``view_flip`` is set, output channel k takes the teacher's
  channel ``flip_index[k]``, since a mirrored crop is labelled with left and right exchanged.

  Args:
    heatmaps: (B, h, w, K) the teacher's heatmaps of the weak view.
    transform: (B, 3, 3) weak-view → strong-view heatmap pixels
      (:func:`crop_to_heatmap_transform` of the batch's ``view_transform``).
    view_flip: (B,) 1 where exactly one view is mirrored.
    flip_index: (K,) the schema's left/right permutation.

  Returns:
    (B, h, w, K) float32.
  """
  heatmaps = jnp.asarray(heatmaps, jnp.float32)
  _, h, w, _ = heatmaps.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  grid = jnp.stack([xs, ys, jnp.ones_like(xs)], axis=-1)  # (h, w, 3) student pixels
  source = jnp.einsum('bij,hwj->bhwi', jnp.linalg.inv(transform), grid)

  def sample(image, x, y):  # one (h, w) map at (h, w) points
    return jax.scipy.ndimage.map_coordinates(image, [y, x], order=1, mode='constant', cval=0.0)

  per_channel = jax.vmap(sample, in_axes=(2, None, None), out_axes=2)
  mapped = jax.vmap(per_channel)(heatmaps, source[..., 0], source[..., 1])
  swapped = mapped[..., jnp.asarray(flip_index)]
  return jnp.where(jnp.asarray(view_flip)[:, None, None, None] > 0.5, swapped, mapped)


def confident_joints(mapped: jax.Array, threshold: float) -> jax.Array:
  """(B, K) float32: 1 where the teacher's mapped heatmap peaks at ``threshold`` or more (its
  maximum over the student's crop, so a joint the student's view cuts off is not confident)."""
  return (jnp.max(mapped, axis=(-3, -2)) >= threshold).astype(jnp.float32)


def consistency_loss(student: jax.Array, mapped: jax.Array, threshold: float,
                     joint_weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The heatmap MSE (as :func:`vitpose_jax.codec.joints_mse`: the mean over samples, pixels and
  joints) of the student's (B, h, w, K) heatmaps to the mapped teacher's, counting only joints
  where the teacher is confident (:func:`confident_joints`); no gradient reaches the teacher.
  Returns ``(loss, confident fraction)``."""
  target = jax.lax.stop_gradient(mapped)
  weights = confident_joints(target, threshold)
  return codec.joints_mse(student, target, weights, joint_weights), jnp.mean(weights)


@dataclasses.dataclass(frozen=True)
class MeanTeacher:
  """The unsupervised terms a mean-teacher run adds to the step, for its ``target`` task.

  Attributes:
    target: the task whose batches hold two views (``image`` strong, ``image_weak``, ...).
    model_task: the model task whose expert and head the target trains (the target itself, or a
      labelled task whose head it shares: ``tasks.<target>.model_task``).
    decay: the teacher's EMA decay per step.
    threshold: the teacher's heatmap peak from which a joint counts in the consistency loss.
    consistency_weight: weight of :func:`consistency_loss` in the total loss.
    flip_index: (K,) the target schema's left/right permutation.
    input_size, heatmap_size: the model's (H, W) sizes.
    beta: sharpness of :func:`vitpose_jax.adapt.keypoints.soft_argmax`.
    prior: a pose prior with ``nll(keypoints (B, K, 2)) -> (B,)`` (:mod:`vitpose_jax.adapt.prior`),
      or None.
    prior_weight: weight of the prior term: the mean over samples of
      ``max(0, nll − prior_margin)`` of the student's keypoints (nats per pose).
    prior_margin: the negative log-likelihood below which a pose is not penalised (e.g. a high
      quantile of the prior's own fitting poses): like a distance to the pose manifold, the term
      is zero for plausible poses.
    silhouette_weight: weight of :func:`vitpose_jax.adapt.keypoints.silhouette_penalty`.
  """

  target: str
  model_task: str
  decay: float
  threshold: float
  consistency_weight: float
  flip_index: tuple[int, ...]
  input_size: tuple[int, int]
  heatmap_size: tuple[int, int]
  beta: float = 20.0
  prior: Any = None
  prior_weight: float = 0.0
  prior_margin: float = 0.0
  silhouette_weight: float = 0.0

  def teacher_targets(self, teacher_heatmaps: jax.Array, batch: Mapping[str, jax.Array]
                      ) -> jax.Array:
    """The teacher's (B, h, w, K) heatmaps of the weak views, mapped into the strong views."""
    transform = crop_to_heatmap_transform(batch['view_transform'], input_size=self.input_size,
                                          heatmap_size=self.heatmap_size)
    return map_heatmaps(teacher_heatmaps, transform, batch['view_flip'], self.flip_index)

  def losses(self, student: jax.Array, targets: jax.Array, batch: Mapping[str, jax.Array],
             joint_weights: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(weighted sum, terms)`` for the student's (B, h, w, K) heatmaps of the strong views:
    ``consistency`` (and ``confident``, the fraction of joints it counted), ``prior`` (mean
    negative log-likelihood above ``prior_margin``, nats per pose) and ``silhouette`` where their
    weights are set."""
    consistency, confident = consistency_loss(student, targets, self.threshold, joint_weights)
    terms = {'consistency': consistency, 'confident': confident}
    total = self.consistency_weight * consistency
    if self.prior_weight or self.silhouette_weight:
      points = keypoints.heatmap_to_input(keypoints.soft_argmax(student, self.beta),
                                          input_size=self.input_size,
                                          heatmap_size=self.heatmap_size)
      if self.prior_weight:
        terms['prior'] = jnp.mean(jax.nn.relu(self.prior.nll(points) - self.prior_margin))
        total += self.prior_weight * terms['prior']
      if self.silhouette_weight:
        terms['silhouette'] = keypoints.silhouette_penalty(points, batch['mask_distance'],
                                                           batch['mask_weight'])
        total += self.silhouette_weight * terms['silhouette']
    return total, terms
