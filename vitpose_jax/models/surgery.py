"""Weight surgery between pose models: starting one from another (:func:`init_from`), a dense ViT
made factorized (:func:`factorize`) and one task of a factorized model made dense
(:func:`dense_for_task`), on NNX pure dicts. The backbone's shared parts are named once
(``BACKBONE_SHARED``, ``BLOCK_SHARED``, ``MLP_SHARED``), so a new shared layer is added in one
place; :func:`dense_for_task` keeps the whole backbone and only merges each fc2 with an expert."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vitpose_jax import skeletons
from vitpose_jax.models.config import ModelConfig, ModelConfigError
from vitpose_jax.models.pose import VitPose, abstract_model, create_model

# The backbone's parts every task shares, outside the blocks and inside each block. A block's MLP
# is the one place the tasks part: fc1 is shared, fc2's first width - P outputs are shared and
# each expert holds one task's last P; every operation below treats fc2 in its own way.
BACKBONE_SHARED = ('patch_embed', 'pos_embed', 'last_norm')
BLOCK_SHARED = ('norm1', 'attn', 'norm2')
MLP_SHARED = ('fc1',)


def _pure(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model))


def _load_pure(model: nnx.Module, pure: dict):
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)


def _copy_shared(src: dict, dst: dict, copy: Callable[[object, object, str], object]):
  """Copies the shared backbone parts (and fc1) of pure dict ``src`` into ``dst`` in place."""
  for key in BACKBONE_SHARED:
    dst['backbone'][key] = copy(src['backbone'][key], dst['backbone'][key], f'backbone.{key}')
  for i, block in src['backbone']['blocks'].items():
    out = dst['backbone']['blocks'][i]
    for key in BLOCK_SHARED:
      out[key] = copy(block[key], out[key], f'blocks.{i}.{key}')
    for key in MLP_SHARED:
      out['mlp'][key] = copy(block['mlp'][key], out['mlp'][key], f'blocks.{i}.mlp.{key}')


def _same_backbone_geometry(a: ModelConfig, b: ModelConfig) -> list[str]:
  fields = ('width', 'depth', 'num_heads', 'mlp_ratio', 'patch_size', 'patch_padding',
            'image_size', 'pos_embed_cls_slot')
  return [f'{f}: {getattr(a, f)} vs {getattr(b, f)}' for f in fields
          if getattr(a, f) != getattr(b, f)]


def init_from(model: VitPose, source: VitPose, expert_from: Mapping[str, str] | None = None,
              shared_keypoints: bool = True) -> list[str]:
  """Loads ``source``'s weights into ``model`` in place: the backbone's shared parts, and the
  experts and heads of tasks with the same name and schema. ``expert_from`` maps a task of the
  model that the source lacks to a task of the source whose expert and decoder layers initialise
  it. Where the two schemas differ, the keypoint layer's output channels of the joints they share
  by name (``skeletons.keypoint_mapping``: 17 of wheelchair23's 23 joints are coco17's, 13 of
  infant_smil25's 25) are copied when ``shared_keypoints`` is true; the other channels keep their
  fresh initialisation. Returns what was loaded (``'backbone'``, then one entry per task).

  Raises ModelConfigError naming the task or layer when ``expert_from`` names an unknown task or
  a layer's shape differs."""
  expert_from = dict(expert_from or {})
  for new, old in expert_from.items():
    if new not in model.config.task_names:
      raise ModelConfigError(f'expert_from: {new!r} is not a task of this config '
                             f'({", ".join(model.config.task_names)})')
    if old not in source.config.task_names:
      raise ModelConfigError(f'expert_from: the source has no task {old!r} '
                             f'(it has {", ".join(source.config.task_names)})')
  src, dst = _pure(source), _pure(model)
  src_blocks, dst_blocks = src['backbone']['blocks'], dst['backbone']['blocks']
  if len(src_blocks) != len(dst_blocks):
    raise ModelConfigError(f'depth {len(src_blocks)} != {len(dst_blocks)}')

  def copy(a, b, where):
    def check(x, y):
      if np.shape(x) != np.shape(y):
        raise ModelConfigError(f'{where} has shape {np.shape(x)}, the model needs {np.shape(y)}')
      # A copy: one source array may start several tasks, and the train step donates its state,
      # which must not hold one buffer twice.
      return np.array(x)
    return jax.tree.map(check, a, b)

  _copy_shared(src, dst, copy)
  for i, block in src_blocks.items():
    dst_blocks[i]['mlp']['fc2'] = copy(block['mlp']['fc2'], dst_blocks[i]['mlp']['fc2'],
                                       f'blocks.{i}.mlp.fc2')
  loaded = ['backbone']
  for task in model.config.tasks:
    same = (task.name in source.config.task_names
            and source.config.task(task.name).schema == task.schema)
    if same:
      old = source.config.task(task.name)
    elif task.name in expert_from:
      old = source.config.task(expert_from[task.name])
    else:
      continue
    # A dense model has no expert of its own: say only what was copied.
    experts = model.config.factorized and source.config.factorized
    if experts:
      for i, block in src_blocks.items():
        dst_blocks[i]['mlp']['experts'][task.expert] = copy(
            block['mlp']['experts'][old.expert], dst_blocks[i]['mlp']['experts'][task.expert],
            f'blocks.{i}.mlp.experts.{old.expert}')
    if old.head != task.head:
      if experts:
        loaded.append(f'{task.name} expert <- {old.name}')
      continue
    src_head, dst_head = src['heads'][old.name], dst['heads'][task.name]
    if old.schema == task.schema:
      dst['heads'][task.name] = copy(src_head, dst_head, f'heads.{old.name}')
      loaded.append(task.name if old.name == task.name else f'{task.name} <- {old.name}')
    else:
      # Another schema: the decoder's feature layers carry over; of the keypoint layer, only the
      # channels of joints both schemas name.
      parts = 'expert+decoder' if experts else 'decoder'
      for key in dst_head:
        if key != 'final_layer':
          dst_head[key] = copy(src_head[key], dst_head[key], f'heads.{old.name}.{key}')
      pairs = skeletons.keypoint_mapping(old.schema, task.schema) if shared_keypoints else ()
      if pairs:
        dst_head['final_layer'] = _copy_channels(src_head['final_layer'],
                                                 dst_head['final_layer'], pairs)
        loaded.append(f'{task.name} {parts}+{len(pairs)}/{task.schema.num_keypoints} '
                      f'keypoint channels <- {old.name}')
      else:
        loaded.append(f'{task.name} {parts} <- {old.name}')
  _load_pure(model, dst)
  return loaded


def _copy_channels(src: Mapping, dst: Mapping, pairs) -> dict:
  """``dst`` (a keypoint layer: kernel (..., C, K), bias (K,)) with output channel j taken from
  ``src``'s channel i for each (i, j) in ``pairs``."""
  out = {}
  for key, value in dst.items():
    value = np.array(value)
    source = np.asarray(src[key])
    if value.shape[:-1] != source.shape[:-1]:
      raise ModelConfigError(f'keypoint layer {key} has shape {source.shape}, the model needs '
                             f'{value.shape} (the same but for the number of keypoints)')
    for i, j in pairs:
      value[..., j] = source[..., i]
    out[key] = value
  return out


def factorize(dense: VitPose, config: ModelConfig, *, seed: int = 0) -> VitPose:
  """A factorized model initialised from a dense one so that every task reproduces it.

  Every expert ← the last P output features of the dense fc2 and the shared fc2 ← the first C − P
  (docs/design.md); everything else is copied. Heads are copied for tasks the dense model also has
  (same keypoint count and head type); other heads keep their fresh initialisation.
  """
  if dense.config.factorized:
    raise ModelConfigError('factorize() needs a dense source model (expert_dim = 0)')
  if not config.factorized:
    raise ModelConfigError('factorize() needs a target config with expert_dim (P) > 0')
  mismatch = _same_backbone_geometry(dense.config, config)
  if mismatch:
    raise ModelConfigError(f'dense and factorized backbones differ: {"; ".join(mismatch)}')
  model = create_model(config, seed=seed, kernels=dense.kernels)
  src, dst = _pure(dense), _pure(model)
  _copy_shared(src, dst, lambda a, b, where: a)
  keep = config.width - config.expert_dim
  for key, block in src['backbone']['blocks'].items():
    out = dst['backbone']['blocks'][key]
    kernel, bias = block['mlp']['fc2']['kernel'], block['mlp']['fc2']['bias']
    # Flax kernels are (in, out): output features are columns.
    out['mlp']['fc2'] = {'kernel': kernel[:, :keep], 'bias': bias[:keep]}
    for e in out['mlp']['experts']:
      out['mlp']['experts'][e] = {'kernel': kernel[:, keep:], 'bias': bias[keep:]}
  for t in config.tasks:
    if t.name in dense.config.task_names:
      old = dense.config.task(t.name)
      if (old.num_keypoints, old.head) == (t.num_keypoints, t.head):
        dst['heads'][t.name] = src['heads'][t.name]
  _load_pure(model, dst)
  return model


def dense_for_task(model: VitPose, task: str) -> VitPose:
  """The dense single-task model of ``task``: every fc2 becomes [shared fc2 ; that task's expert].

  This is what the official tools/model_split.py set out to do; the result computes exactly what
  the factorized model computes for that task.
  """
  spec = model.config.task(task)
  config = model.config.replace(tasks=(dataclasses.replace(spec, expert=0),), expert_dim=0,
                                num_experts=0)
  dense = abstract_model(config, kernels=model.kernels)
  src = _pure(model)
  backbone = src['backbone']
  for block in backbone['blocks'].values():
    mlp = block['mlp']
    if model.config.factorized:
      expert = mlp['experts'][spec.expert]
      mlp['fc2'] = {
          'kernel': jnp.concatenate([mlp['fc2']['kernel'], expert['kernel']], axis=1),
          'bias': jnp.concatenate([mlp['fc2']['bias'], expert['bias']], axis=0),
      }
    mlp['experts'] = {}
  if model.config.num_knowledge_tokens:
    i = model.config.task_names.index(task)
    backbone['knowledge_tokens'] = backbone['knowledge_tokens'][i:i + 1]
  _load_pure(dense, {'backbone': backbone, 'heads': {task: src['heads'][task]}})
  return dense
