"""The ViTPose optimizer recipe: AdamW with layer-wise lr decay, clipping and a warmed-up schedule.

The official recipe (mmcv ``LayerDecayOptimizerConstructor``): AdamW with betas (0.9, 0.999),
weight decay 0.1 except on 1-D parameters and the position embedding, and a per-parameter lr of
``rate ** (depth + 1 - layer_id)`` times the schedule, where the embeddings have layer id 0, block
``i`` has ``i + 1`` and everything after the blocks (``last_norm``, heads) ``depth + 1``; gradients
clipped to global norm 1; a linear warmup from ``warmup_ratio × base`` to ``base``, then ×0.1 at
epochs 170 and 200 of 210.

Everything here works on the ``params`` pytree of ``nnx.split(model, nnx.Param, ...)`` (or any
pytree keyed the same way); the trees built from it keep its structure, so they line up with the
gradients leaf for leaf.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

PyTree = Any
Path = tuple[str | int, ...]

EMBEDDINGS = ('patch_embed', 'pos_embed')
SCHEDULE_KINDS = ('step', 'cosine')
# The units a duration may be given in, each with the type a config holds it as (epochs may be
# fractional).
DURATION_TYPES = {'steps': int, 'examples': int, 'epochs': float}
DURATION_UNITS = tuple(DURATION_TYPES)


def normalize_path(path: Sequence[Any]) -> Path:
  """A key path as plain names and indices, e.g. ``('backbone', 'blocks', 3, 'mlp', 'fc1',
  'kernel')``, from a ``jax.tree_util`` key path or a tuple that is already plain."""
  keys = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey | jax.tree_util.FlattenedIndexKey):
      keys.append(entry.key)
    elif isinstance(entry, jax.tree_util.SequenceKey):
      keys.append(entry.idx)
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      keys.append(entry.name)
    else:
      keys.append(entry)
  # An nnx.Variable flattens to its `.value`: that attribute is no part of the parameter's name.
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == 'value':
    keys.pop()
  return tuple(keys)


def layer_id(path: Sequence[Any], depth: int) -> int:
  """The layer a parameter belongs to for lr decay: 0 for the embeddings, ``i + 1`` for backbone
  block ``i``, ``depth + 1`` for everything else (``last_norm``, the heads)."""
  p = normalize_path(path)
  if len(p) < 2 or p[0] != 'backbone':
    return depth + 1
  if p[1] in EMBEDDINGS:
    return 0
  if p[1] == 'blocks':
    block = int(p[2])
    if not 0 <= block < depth:
      raise ValueError(f'parameter {p} is in block {block} of a backbone of depth {depth}')
    return block + 1
  return depth + 1


def lr_scales(params: PyTree, depth: int, decay_rate: float) -> PyTree:
  """Per-parameter lr multipliers ``decay_rate ** (depth + 1 - layer_id)``, shaped like params."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decay_rate ** (depth + 1 - layer_id(path, depth)), params)


# Embedding-like parameters that, as timm's cls token and position embedding, get no weight decay.
NO_DECAY = frozenset({'pos_embed', 'knowledge_tokens', 'knowledge_pos'})


def weight_decay_mask(params: PyTree) -> PyTree:
  """True where weight decay applies: not on 1-D parameters (biases, norm scales), the position
  embedding or knowledge tokens."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim > 1 and not NO_DECAY.intersection(normalize_path(path)), params)


def schedule(
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    warmup_ratio: float = 1e-3,
    kind: str = 'step',
    decay_steps: Sequence[int] = (),
    decay_factor: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> optax.Schedule:
  """The learning rate per step: linear warmup from ``warmup_ratio × base_lr`` to ``base_lr`` over
  ``warmup_steps``, then either ``kind='step'`` (×``decay_factor`` from each of ``decay_steps``,
  global step indices, on) or ``kind='cosine'`` (cosine from ``base_lr`` down to
  ``min_lr_ratio × base_lr`` at ``total_steps``)."""
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f'unknown schedule kind {kind!r}; known: {", ".join(SCHEDULE_KINDS)}')
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f'need 0 <= warmup_steps <= total_steps, got {warmup_steps} and '
                     f'{total_steps}')
  if kind == 'step':
    boundaries = [int(b) for b in decay_steps]
    if boundaries != sorted(set(boundaries)) or (boundaries and boundaries[0] <= warmup_steps):
      raise ValueError(f'decay_steps must increase strictly and come after the warmup '
                       f'({warmup_steps} steps), got {tuple(decay_steps)}')
    # join_schedules hands the second schedule the steps since the warmup ended.
    main = optax.piecewise_constant_schedule(
        base_lr, {b - warmup_steps: decay_factor for b in boundaries})
  else:
    if total_steps == warmup_steps:
      raise ValueError(f'a cosine schedule needs steps after the warmup, got total_steps = '
                       f'warmup_steps = {total_steps}')
    main = optax.cosine_decay_schedule(base_lr, total_steps - warmup_steps, alpha=min_lr_ratio)
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(warmup_ratio * base_lr, base_lr, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def _scale_per_param(scales: PyTree) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its entry in ``scales``."""

  def scale(updates, params):
    del params
    # `scales` leads the map so that each of its leaves may meet a subtree: inside
    # optax.partition, frozen parameters arrive as empty optax.MaskedNode subtrees.
    return jax.tree.map(lambda s, u: jax.tree.map(lambda x: x * s, u), scales, updates)

  return optax.stateless(scale)


def make_optimizer(
    params: PyTree,
    *,
    depth: int,
    weight_decay: float,
    layer_decay: float,
    schedule: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float | None = 1.0,
    trainable: PyTree | Callable[[Path], bool] | None = None,
) -> optax.GradientTransformation:
  """AdamW with layer-wise lr decay and global-norm clipping, as ViTPose trains.

  The update of a parameter is ``-schedule(step) × lr_scale × (adam + weight_decay × param)``:
  like torch's AdamW with one param group per layer, the layer's lr scales the decoupled weight
  decay too, so ``layer_decay=1`` is exactly ``optax.adamw``. ``schedule`` is the lr (a float or
  an ``optax.Schedule`` such as :func:`schedule` returns).

  ``trainable`` (a pytree of bools shaped like params, or a predicate on normalised paths) freezes
  the other parameters: they get zero updates, no Adam moments, and no share of the clipping
  norm, as parameters without ``requires_grad`` in torch.
  """
  adamw = optax.chain(
      *([optax.clip_by_global_norm(clip_norm)] if clip_norm is not None else []),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay, weight_decay_mask(params)),
      optax.scale_by_learning_rate(schedule),
      _scale_per_param(lr_scales(params, depth, layer_decay)),
  )
  if trainable is None:
    return adamw
  if callable(trainable):
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: 'train' if trainable(normalize_path(path)) else 'frozen', params)
  else:
    labels = jax.tree.map(lambda t: 'train' if t else 'frozen', trainable)
  return optax.partition({'train': adamw, 'frozen': optax.set_to_zero()}, labels)


def steps_from(
    config_like: Mapping[str, Any],
    *,
    steps_per_epoch: int,
    batch_size: int,
    prefix: str = 'total',
) -> int:
  """A duration in steps from exactly one of ``{prefix}_steps``, ``{prefix}_examples`` (global
  examples; a partial last batch counts as a step) or ``{prefix}_epochs`` (may be fractional;
  rounded to the nearest step). Keys set to None count as unset."""
  keys = [f'{prefix}_{unit}' for unit in DURATION_UNITS]
  given = {k: config_like.get(k) for k in keys if config_like.get(k) is not None}
  if len(given) != 1:
    found = ', '.join(f'{k}={v!r}' for k, v in given.items()) or 'none is set'
    raise ValueError(f'set exactly one of {", ".join(keys)}; {found}')
  (key, value), = given.items()
  if value < 0:
    raise ValueError(f'{key} must not be negative, got {value!r}')
  if key.endswith('_steps'):
    if value != int(value):
      raise ValueError(f'{key} must be a whole number, got {value!r}')
    return int(value)
  if key.endswith('_examples'):
    return math.ceil(value / batch_size)
  return round(value * steps_per_epoch)
