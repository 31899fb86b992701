"""The multi-task pose model: one factorized ViT backbone, one heatmap head per task.

The model is called on a batch dict ``{task: images (n_t, H, W, 3)}`` (docs/design.md,
*Batches*) and returns ``({task: heatmaps (n_t, h, w, K_t)}, aux)`` with
``aux[task] = {'patch_tokens': (n_t, L, C), 'feature_map': (n_t, rows, cols, C)}``. All tasks'
samples go through the shared backbone in one pass; each task's expert and head see only that
task's samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vitpose_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vitpose_jax.models.config import ModelConfig, ModelConfigError, TaskSpec
from vitpose_jax.models.heads import ClassicDecoder, SapiensDecoder, SimpleDecoder
from vitpose_jax.models.vit import Kernels, ViT


def _make_head(config: ModelConfig, task: TaskSpec, rngs: nnx.Rngs) -> nnx.Module:
  dtype = jnp.dtype(config.dtype)
  if task.head == 'classic':
    return ClassicDecoder(config.width, task.num_keypoints, channels=config.deconv_channels,
                          num_layers=config.num_deconv_layers, dtype=dtype, rngs=rngs)
  if task.head == 'sapiens':
    return SapiensDecoder(config.width, task.num_keypoints, channels=config.deconv_channels,
                          num_layers=config.num_deconv_layers, dtype=dtype, rngs=rngs)
  return SimpleDecoder(config.width, task.num_keypoints, dtype=dtype, rngs=rngs)


class VitPose(nnx.Module):
  """ViTPose / ViTPose++: backbone + per-task heads. Dense when ``config.expert_dim == 0``.
  ``kernels``: how the backbone computes (:class:`~vitpose_jax.models.vit.Kernels`); the default
  runs on every backend."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, kernels: Kernels = Kernels()):
    self.config = config
    self.kernels = kernels
    self.backbone = ViT(config, rngs=rngs, kernels=kernels)
    self.heads = nnx.Dict({t.name: _make_head(config, t, rngs) for t in config.tasks})
    if config.num_knowledge_tokens:
      self.backbone.init_knowledge_tokens(rngs)

  def __call__(
      self,
      images: Mapping[str, jax.Array],
      *,
      train: bool = False,
      rng: jax.Array | None = None,
      knowledge: Mapping[str, jax.Array] | None = None,
      frozen_backbone: bool = False,
  ) -> tuple[dict[str, jax.Array], dict[str, dict[str, Any]]]:
    """Heatmaps per task. ``train`` enables drop-path (needs ``rng``) and BatchNorm batch stats.

    Images are RGB, either uint8 pixels (0-255), normalised here as ``(x − IMAGENET_MEAN) /
    IMAGENET_STD`` (what the data pipeline feeds), or floats taken as already normalised (export,
    raw parity inputs).

    Knowledge tokens: the model's own (``config.num_knowledge_tokens`` per task), or, given
    ``knowledge`` = {task: (n, width)} (e.g. a teacher's tokens through a bridge), those instead.

    ``frozen_backbone``: the backbone runs in inference mode (no drop-path) and passes no
    gradient back, as when it does not train: the heads then see exactly what
    :meth:`feature_maps` gives, and no backward pass through the backbone is computed.
    """
    if frozen_backbone:
      fmaps = jax.lax.stop_gradient(self.feature_maps(images, knowledge=knowledge))
    else:
      fmaps = self.feature_maps(images, train=train, rng=rng, knowledge=knowledge)
    return self.decode(fmaps, train=train)

  def feature_maps(
      self,
      images: Mapping[str, jax.Array],
      *,
      train: bool = False,
      rng: jax.Array | None = None,
      knowledge: Mapping[str, jax.Array] | None = None,
  ) -> dict[str, jax.Array]:
    """The backbone's output per task: ``{task: (n_t, rows, cols, width)}`` in the model's
    dtype, patch tokens after the final LayerNorm, knowledge tokens dropped (arguments as in
    :meth:`__call__`)."""
    cfg = self.config
    unknown = [t for t in images if t not in cfg.task_names]
    if unknown:
      raise ModelConfigError(f'batch has unknown task(s) {unknown}; the model has {cfg.task_names}')
    order = [t for t in cfg.task_names if t in images]
    if not order:
      raise ModelConfigError(f'batch holds no task; the model has {cfg.task_names}')
    segments, start = [], 0
    for name in order:
      x = images[name]
      if x.ndim != 4 or tuple(x.shape[1:]) != (*cfg.image_size, 3):
        raise ModelConfigError(
            f'task {name!r}: images must be (n, {cfg.image_size[0]}, {cfg.image_size[1]}, 3), '
            f'got {tuple(x.shape)}'
        )
      if not (x.dtype == jnp.uint8 or jnp.issubdtype(x.dtype, jnp.floating)):
        raise ModelConfigError(f'task {name!r}: images must be uint8 pixels or normalised floats, '
                               f'got {x.dtype}')
      segments.append((start, x.shape[0], cfg.task(name).expert))
      start += x.shape[0]
    inputs = [_normalised(images[t]) for t in order]
    x = jnp.concatenate(inputs, axis=0) if len(inputs) > 1 else inputs[0]
    tokens = self.backbone(x, segments, train=train, rng=rng,
                           extra_tokens=self._knowledge(order, images, knowledge))
    rows, cols = cfg.grid_size
    return {name: tokens[begin:begin + count].reshape(count, rows, cols, cfg.width)
            for name, (begin, count, _) in zip(order, segments)}

  def decode(
      self, feature_maps: Mapping[str, jax.Array], *, train: bool = False,
  ) -> tuple[dict[str, jax.Array], dict[str, dict[str, Any]]]:
    """``({task: heatmaps (n_t, h, w, K_t) float32}, aux)`` from :meth:`feature_maps`' output
    (or features cached from it), each task through its own head; ``aux[task]`` holds its
    ``'feature_map'`` and its ``'patch_tokens'`` (n_t, rows·cols, width). ``train``: BatchNorm
    batch statistics."""
    rows, cols = self.config.grid_size
    unknown = [t for t in feature_maps if t not in self.config.task_names]
    if unknown:
      raise ModelConfigError(f'feature maps of unknown task(s) {unknown}; the model has '
                             f'{self.config.task_names}')
    heatmaps, aux = {}, {}
    for name in self.config.task_names:
      if name not in feature_maps:
        continue
      fmap = feature_maps[name]
      if fmap.ndim != 4 or tuple(fmap.shape[1:]) != (rows, cols, self.config.width):
        raise ModelConfigError(f'task {name!r}: feature maps must be (n, {rows}, {cols}, '
                               f'{self.config.width}), got {tuple(fmap.shape)}')
      heatmaps[name] = self.heads[name](fmap, train=train).astype(jnp.float32)
      aux[name] = {'patch_tokens': fmap.reshape(fmap.shape[0], rows * cols, -1),
                   'feature_map': fmap}
    return heatmaps, aux

  def knowledge_tokens(self) -> dict[str, jax.Array]:
    """{task: (n, width)}: the model's own knowledge tokens with their position vectors."""
    if not self.config.num_knowledge_tokens:
      return {}
    tokens = self.backbone.knowledge()
    return {t.name: tokens[i] for i, t in enumerate(self.config.tasks)}

  def _knowledge(self, order, images, knowledge) -> jax.Array | None:
    if knowledge is None:
      knowledge = self.knowledge_tokens()
    if not knowledge:
      return None
    missing = [t for t in order if t not in knowledge]
    if missing:
      raise ModelConfigError(f'knowledge tokens missing for task(s) {missing}')
    width = self.config.width
    for t in order:
      if knowledge[t].ndim != 2 or knowledge[t].shape[1] != width:
        raise ModelConfigError(f'task {t!r}: knowledge tokens must be (n, {width}), got '
                               f'{tuple(knowledge[t].shape)}')
    return jnp.concatenate(
        [jnp.broadcast_to(knowledge[t], (images[t].shape[0], *knowledge[t].shape)) for t in order],
        axis=0)


def _normalised(images: jax.Array) -> jax.Array:
  # On the device: the host ships uint8, a quarter of the bytes, and spends no float pass on it.
  if images.dtype != jnp.uint8:
    return images
  return (images.astype(jnp.float32) - IMAGENET_MEAN) / IMAGENET_STD


def create_model(config: ModelConfig, *, seed: int = 0, kernels: Kernels = Kernels()) -> VitPose:
  return VitPose(config, rngs=nnx.Rngs(params=seed), kernels=kernels)


def abstract_model(config: ModelConfig, *, kernels: Kernels = Kernels()) -> VitPose:
  """The model with shape-only parameters: for counting, sharding and restoring without compute."""
  return nnx.eval_shape(lambda: create_model(config, kernels=kernels))


def with_kernels(model: VitPose, kernels: Kernels) -> VitPose:
  """``model`` computing with ``kernels``: itself when it already does, else a model of the same
  config sharing its arrays (no copy)."""
  if model.kernels == kernels:
    return model
  out = abstract_model(model.config, kernels=kernels)
  nnx.update(out, nnx.state(model))
  return out


def count_params(model: nnx.Module, path_prefix: tuple[str, ...] = ()) -> int:
  """Number of trainable (nnx.Param) scalars, optionally under a sub-path such as ('backbone',)."""
  total = 0
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    if tuple(str(p) for p in path[:len(path_prefix)]) == path_prefix:
      total += int(np.prod(leaf.shape))
  return total
