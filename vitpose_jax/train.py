"""Multi-task training: ``train_and_evaluate(config, workdir)`` → final metrics (DESIGN §3).

One factorized model, one global batch per step holding every task's share (static shapes), a
``jax.jit`` step over a 1-D device ``Mesh`` (axis ``data``: batch sharded, state replicated and
donated). Heatmap targets are made on device from the batch's crop keypoints; each task's
JointsMSE is averaged over that task's own samples, then weighted by its ``loss_weight``.

The run directory (DESIGN §3.2): config.json, model.json, checkpoints/ (Orbax: ``model``,
``opt_state``, ``train`` (step, rng) and ``data`` (the grain iterator state) per step),
metrics.json, evals.jsonl (one line per evaluation: step, samples seen and the metrics), TensorBoard
events, plots/. Re-running on the same workdir resumes; a config of another model is refused
before anything is written (:func:`check_run_directory`), and a changed config.json is kept
beside the new one (:func:`write_run_description`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import backend, checkpoint, codec, models, optim, skeletons
from vitpose_jax.data import pipeline, transforms
from vitpose_jax.draw import draw_pose

_DEVICE_KEYS = ('image', 'keypoints')


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss, an inconsistent config); the message says where."""


TRAINABLE = ('all', 'experts+heads', 'heads', 'tokens')


def model_config(config: ml_collections.ConfigDict) -> models.ModelConfig:
  """The network a training config describes (``config.model`` + one task per
  ``config.tasks``). ``config.model.variant = 'init_from'`` takes the network's geometry (width,
  depth, P, decoder, input size) from the run ``config.init_from`` names, with the config's tasks.
  """
  m = config.model
  if m.variant == 'init_from':
    return _geometry_from_init(config)
  variant = models.VARIANTS[m.variant]
  expert_dim = variant.expert_dim if m.expert_dim < 0 else m.expert_dim
  tasks = tuple(
      models.TaskSpec(name, skeletons.get(t.schema), expert=t.get('expert', i), head=m.decoder)
      for i, (name, t) in enumerate(config.tasks.items()))
  overrides = {'expert_dim': expert_dim} if expert_dim > 0 else {}
  overrides['num_knowledge_tokens'] = m.get('knowledge_tokens', 0)
  if config.get('tokens_from'):
    source = models.ModelConfig.load(config.tokens_from)
    if not source.num_knowledge_tokens:
      raise TrainingError(f'config.tokens_from {config.tokens_from} has no knowledge tokens '
                          '(train them with configs/distill.py:stage=tokens)')
    overrides.update(num_knowledge_tokens=source.num_knowledge_tokens,
                     knowledge_source_width=source.width)
  if m.get('deconv_channels', -1) > 0:
    overrides['deconv_channels'] = m.deconv_channels
  return models.model_config(
      m.variant, tasks, factorized=expert_dim > 0, decoder=m.decoder, eps=m.eps,
      drop_path=m.drop_path, remat=m.remat, dtype=m.dtype, image_size=tuple(m.image_size),
      attention=m.get('attention', 'auto'), heatmap_sigma=config.data.sigma, **overrides)


def _geometry_from_init(config: ml_collections.ConfigDict) -> models.ModelConfig:
  if not config.init_from:
    raise TrainingError('config.model.variant is "init_from" but config.init_from is empty: '
                        'pass --config.init_from=RUN (a training run or a converted checkpoint)')
  source = models.ModelConfig.load(config.init_from)
  m = config.model
  # The source's factorization carries over: a dense source gives a dense multi-head model.
  factorized = source.factorized
  tasks = tuple(
      models.TaskSpec(name, skeletons.get(t.schema), expert=t.get('expert', i) if factorized else 0,
                      head=source.tasks[0].head)
      for i, (name, t) in enumerate(config.tasks.items()))
  return dataclasses.replace(
      source, tasks=tasks,
      num_experts=max(t.expert for t in tasks) + 1 if factorized else 0,
      drop_path=m.drop_path, remat=m.remat, dtype=m.dtype, attention=m.get('attention', 'auto'),
      num_knowledge_tokens=m.get('knowledge_tokens', 0), heatmap_sigma=config.data.sigma)


def _init_from(model: models.VitPose, path: str,
               expert_from: Mapping[str, str] | None = None,
               shared_keypoints: bool = True) -> list[str]:
  """Loads weights of another run or converted checkpoint: the backbone's shared parts, and the
  experts and heads of tasks with the same name and schema. ``expert_from`` maps a task of the
  model that the source lacks to a task of the source whose expert and decoder layers initialise
  it. Where the two schemas differ, the keypoint layer's output channels of the joints they share
  by name (``skeletons.keypoint_mapping``: 17 of wheelchair23's 23 joints are coco17's, 13 of
  infant_smil25's 25) are copied when ``shared_keypoints`` is true; the other channels keep their
  fresh initialisation. Returns what was loaded."""
  expert_from = dict(expert_from or {})
  source, _ = checkpoint.load_model(path)
  for new, old in expert_from.items():
    if new not in model.config.task_names:
      raise TrainingError(f'expert_from: {new!r} is not a task of this config '
                          f'({", ".join(model.config.task_names)})')
    if old not in source.config.task_names:
      raise TrainingError(f'expert_from: {path} has no task {old!r} '
                          f'(it has {", ".join(source.config.task_names)})')
  src = nnx.to_pure_dict(nnx.state(source))
  dst = nnx.to_pure_dict(nnx.state(model))
  src_blocks, dst_blocks = src['backbone']['blocks'], dst['backbone']['blocks']
  if len(src_blocks) != len(dst_blocks):
    raise TrainingError(f'init_from {path}: depth {len(src_blocks)} != {len(dst_blocks)}')
  loaded = ['backbone']

  def copy(a, b, where):
    def check(x, y):
      if np.shape(x) != np.shape(y):
        raise TrainingError(f'init_from {path}: {where} has shape {np.shape(x)}, the model '
                            f'needs {np.shape(y)}')
      # A copy: one source array may start several tasks, and the train step donates its state,
      # which must not hold one buffer twice.
      return np.array(x)
    return jax.tree.map(check, a, b)

  for key in ('patch_embed', 'pos_embed', 'last_norm'):
    dst['backbone'][key] = copy(src['backbone'][key], dst['backbone'][key], f'backbone.{key}')
  for i, block in src_blocks.items():
    for key in ('norm1', 'attn', 'norm2'):
      dst_blocks[i][key] = copy(block[key], dst_blocks[i][key], f'blocks.{i}.{key}')
    for key in ('fc1', 'fc2'):
      dst_blocks[i]['mlp'][key] = copy(block['mlp'][key], dst_blocks[i]['mlp'][key],
                                       f'blocks.{i}.mlp.{key}')
  for task in model.config.tasks:
    same = (task.name in source.config.task_names
            and source.config.task(task.name).skeleton == task.skeleton)
    if same:
      old = source.config.task(task.name)
    elif task.name in expert_from:
      old = source.config.task(expert_from[task.name])
    else:
      continue
    if model.config.factorized and source.config.factorized:
      for i, block in src_blocks.items():
        dst_blocks[i]['mlp']['experts'][task.expert] = copy(
            block['mlp']['experts'][old.expert], dst_blocks[i]['mlp']['experts'][task.expert],
            f'blocks.{i}.mlp.experts.{old.expert}')
    if old.head != task.head:
      loaded.append(f'{task.name} expert <- {old.name}')
      continue
    src_head, dst_head = src['heads'][old.name], dst['heads'][task.name]
    if old.skeleton == task.skeleton:
      dst['heads'][task.name] = copy(src_head, dst_head, f'heads.{old.name}')
      loaded.append(task.name if old.name == task.name else f'{task.name} <- {old.name}')
    else:
      # Another schema: the decoder's feature layers carry over; of the keypoint layer, only the
      # channels of joints both schemas name.
      for key in dst_head:
        if key != 'final_layer':
          dst_head[key] = copy(src_head[key], dst_head[key], f'heads.{old.name}.{key}')
      pairs = skeletons.keypoint_mapping(old.skeleton, task.skeleton) if shared_keypoints else ()
      if pairs:
        dst_head['final_layer'] = _copy_channels(src_head['final_layer'],
                                                 dst_head['final_layer'], pairs)
        loaded.append(f'{task.name} expert+decoder+{len(pairs)}/{task.skeleton.num_keypoints} '
                      f'keypoint channels <- {old.name}')
      else:
        loaded.append(f'{task.name} expert+decoder <- {old.name}')
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, dst)
  nnx.update(model, state)
  return loaded


def _copy_channels(src: Mapping, dst: Mapping, pairs) -> dict:
  """``dst`` (a keypoint layer: kernel (..., C, K), bias (K,)) with output channel j taken from
  ``src``'s channel i for each (i, j) in ``pairs``."""
  out = {}
  for key, value in dst.items():
    value = np.array(value)
    source = np.asarray(src[key])
    if value.shape[:-1] != source.shape[:-1]:
      raise TrainingError(f'init_from: keypoint layer {key} has shape {source.shape}, the model '
                          f'needs {value.shape} (the same but for the number of keypoints)')
    for i, j in pairs:
      value[..., j] = source[..., i]
    out[key] = value
  return out


def _trainable(config, mcfg: models.ModelConfig):
  """The parameters the run trains (``config.trainable``), as make_optimizer's predicate. Tokens
  that come from another model (``knowledge_source_width``) never train."""
  mode = config.get('trainable', 'all')
  if mode not in TRAINABLE:
    raise TrainingError(f'config.trainable {mode!r} is not one of {", ".join(TRAINABLE)}')
  modes = {
      'all': lambda path: True,
      'heads': lambda path: path[0] == 'heads',
      'experts+heads': lambda path: path[0] == 'heads' or 'experts' in path,
      'tokens': lambda path: path[-1] in ('knowledge_tokens', 'knowledge_pos'),
  }
  if not mcfg.knowledge_source_width:
    return None if mode == 'all' else modes[mode]
  return lambda path: modes[mode](path) and path[-1] != 'knowledge_tokens'


def _knowledge_source(model: models.VitPose, path: str) -> str:
  """Puts the tokens of run ``path`` (with their position vectors, as they enter that model's
  sequence) into ``model`` as its frozen knowledge source, matched by task name."""
  source, _ = checkpoint.load_model(path)
  tokens = source.knowledge_tokens()
  missing = [t for t in model.config.task_names if t not in tokens]
  if missing:
    raise TrainingError(f'config.tokens_from {path} has no tokens for task(s) {missing} '
                        f'(it has {", ".join(tokens)})')
  model.backbone.knowledge_tokens[...] = jnp.stack(
      [tokens[t] for t in model.config.task_names])
  return f'knowledge tokens of {path}'


def _teacher(path: str, mcfg: models.ModelConfig) -> models.VitPose:
  teacher, _ = checkpoint.load_model(path)
  missing = [t for t in mcfg.task_names if t not in teacher.config.task_names]
  if missing:
    raise TrainingError(f'config.teacher {path} has no task(s) {missing} '
                        f'(it has {", ".join(teacher.config.task_names)})')
  if teacher.config.heatmap_size != mcfg.heatmap_size:
    raise TrainingError(f'config.teacher {path}: heatmaps {teacher.config.heatmap_size} != the '
                        f"student's {mcfg.heatmap_size}")
  return teacher


def _check_test_seeds(config):
  """Synthetic test seeds never train, and never pick a checkpoint: validation data does."""
  from vitpose_jax.data.synthetic import TEST_SEED_START

  for name, t in config.tasks.items():
    for k in ('train', 'val'):
      if t[k].get('source') == 'synthetic' and int(t[k].get('seed', 0)) >= TEST_SEED_START:
        raise TrainingError(f'tasks.{name}.{k}: synthetic seed {t[k].seed} is a test seed '
                            f'(>= {TEST_SEED_START}): test seeds are never used for training, '
                            'checkpoint selection or tuning')


def _sources(config, split_key: str):
  specs = [(t[k].population, 'train' if k == 'train' else 'val', int(t[k].num),
            int(t[k].get('seed', 0)))
           for t in config.tasks.values() for k in ('train', 'val')
           if t[k].get('source') == 'synthetic']
  pipeline.generate_synthetic(specs)
  out = {}
  for name, t in config.tasks.items():
    schema = skeletons.get(t.schema)
    split = 'train' if split_key == 'train' else 'val'
    out[name] = pipeline.open_source(t[split_key].to_dict(), schema, split=split)
  return out


def _plots(model, config, workdir: str):
  """Predictions on the first validation instances of each task, drawn under RUN/plots/, by this
  process's copy of the (replicated) ``model`` on its first device."""
  from PIL import Image

  from vitpose_jax.predict import Predictor

  local = jax.tree.map(lambda x: x.addressable_data(0), nnx.state(model))
  predictor = Predictor(nnx.merge(nnx.graphdef(model), local),
                        mesh=Mesh(np.array(jax.local_devices()[:1]), ('data',)))
  os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
  sources = _sources(config, 'val')
  for name, source in sources.items():
    skeleton = predictor.config.task(name).skeleton
    tiles = []
    for i in range(min(config.plots, len(source))):
      element = source[i]
      (instance,) = predictor.predict_image(name, element['image'], [element['bbox'].tolist()])
      tiles.append(draw_pose(element['image'], [instance['keypoints']], skeleton,
                             boxes=[element['bbox'].tolist()]))
    if not tiles:
      continue
    height = max(t.height for t in tiles)
    grid = Image.new('RGB', (sum(t.width for t in tiles), height))
    x = 0
    for t in tiles:
      grid.paste(t, (x, 0))
      x += t.width
    grid.save(os.path.join(workdir, 'plots', f'{name}.png'))


def resolve_evals(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose ``evals`` entries without ``data`` evaluate their task's
  validation data (``tasks.<task>.val``), so pointing a task at other data moves its evaluation
  with it."""
  from vitpose_jax.data.synthetic import TEST_SEED_START

  config = copy.deepcopy(config)
  with config.unlocked():
    for name, spec in config.evals.items():
      if spec.get('data') is None:
        task = spec.get('task', name)
        if task not in config.tasks:
          raise TrainingError(f'evals.{name}: no data and no task {task!r} to take it from')
        spec.data = config.tasks[task].val.to_dict()
      data = spec.data
      if (config.checkpoint.get('best_metric') and data.get('source') == 'synthetic'
          and int(data.get('seed', 0)) >= TEST_SEED_START):
        raise TrainingError(f'evals.{name}: synthetic seed {data.seed} is a test seed (>= '
                            f'{TEST_SEED_START}) and checkpoint.best_metric would select on it')
  return config


def fit_batches_to_devices(config: ml_collections.ConfigDict, num_devices: int):
  """Checks that ``num_devices`` divides every ``tasks.<name>.batch_size`` (each device takes an
  equal share). With ``config.round_batch_to_devices`` (smoke runs: ``:runlocal``) a batch size it
  does not divide is rounded up to the next multiple in ``config``, in place, and printed, so the
  smoke run works on any device count; otherwise it is a TrainingError, since a real recipe's batch
  size is part of the recipe."""
  for name, t in config.tasks.items():
    if t.batch_size % num_devices == 0:
      continue
    if not config.get('round_batch_to_devices', False):
      raise TrainingError(f'tasks.{name}.batch_size {t.batch_size} is not divisible by the '
                          f'{num_devices} devices')
    rounded = -(-t.batch_size // num_devices) * num_devices
    if jax.process_index() == 0:
      print(f'tasks.{name}.batch_size {t.batch_size} → {rounded}: a multiple of the '
            f'{num_devices} devices (config.round_batch_to_devices)', flush=True)
    t.batch_size = rounded


# model.json fields that say how the network is computed, not what it computes (both attention
# kernels compute the same function): a resumed run may change them, e.g. remat to fit the memory
# of another accelerator.
_RESUMABLE_MODEL_FIELDS = ('remat', 'attention')


def _summary(changes: list[str], shown: int = 3) -> str:
  more = f'; and {len(changes) - shown} more' if len(changes) > shown else ''
  return '; '.join(changes[:shown]) + more


def check_run_directory(workdir: str, mcfg: models.ModelConfig):
  """Raises TrainingError when ``workdir`` holds a run of another model than ``mcfg``, in one line
  naming what differs (:meth:`models.ModelConfig.differences`: a model.json written before a
  field existed does not differ by lacking it). ``remat`` and ``attention`` may differ. Called
  before anything is written, so a refused run leaves the directory as it was."""
  path = os.path.join(workdir, 'model.json')
  if not os.path.exists(path):
    return
  try:
    existing = models.ModelConfig.load(path)
  except models.ModelConfigError as e:
    raise TrainingError(f'{e}; it is left as it is: train in a new --workdir') from None
  changes = existing.differences(mcfg, ignore=_RESUMABLE_MODEL_FIELDS)
  if changes:
    raise TrainingError(f'{path} describes another model than this config '
                        f'({_summary(changes)}); resume with the same model, or train this one '
                        'in a new --workdir')


def _write(path: str, text: str):
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_run_description(workdir: str, config: ml_collections.ConfigDict,
                          mcfg: models.ModelConfig):
  """Writes ``model.json`` when the run is new (an existing one matched, see
  :func:`check_run_directory`, and stays as it is) and ``config.json``. When the run's
  ``config.json`` differs from ``config`` (a resumed run given more steps, say), it is kept as
  ``config.<n>.json`` (n = 1, 2, ... in the order they were replaced) and the change is printed:
  ``config.json`` is the latest configuration, and none is lost."""
  model_path = os.path.join(workdir, 'model.json')
  if not os.path.exists(model_path):
    _write(model_path, mcfg.to_json())
  path = os.path.join(workdir, 'config.json')
  text = config.to_json_best_effort(indent=1)
  try:
    with open(path) as f:
      previous = f.read()
  except FileNotFoundError:
    _write(path, text)
    return
  try:
    changes = models.json_differences(json.loads(previous), json.loads(text))
  except json.JSONDecodeError:
    changes = ['the previous one is not valid JSON']
  if not changes:
    return
  n = 1
  while os.path.exists(os.path.join(workdir, f'config.{n}.json')):
    n += 1
  os.replace(path, os.path.join(workdir, f'config.{n}.json'))
  _write(path, text)
  print(f'{path}: the config differs from the last run\'s ({_summary(changes)}); that one is '
        f'kept as config.{n}.json', flush=True)


def _evaluate(model, config, workdir: str, step: int, writer, mesh) -> dict[str, Any]:
  """The evaluations of ``config.evals`` of the (replicated) ``model``, every process taking part:
  each batch is split over ``mesh``. The compiled predictor is shared by every evaluation of the
  run (see :class:`vitpose_jax.predict.Predictor`). Process 0 draws the plots."""
  from vitpose_jax.evaluation import run_evaluators
  from vitpose_jax.predict import Predictor

  metrics = run_evaluators(config.evals.to_dict(), Predictor(model, mesh=mesh))
  for k, v in metrics.items():
    if isinstance(v, (int, float)):
      writer.add_scalar(f'eval/{k}', v, step)
  if config.plots and jax.process_index() == 0:
    _plots(model, config, workdir)
  return metrics


class _NullWriter:
  """Stands in for the TensorBoard writer on every process but the first."""

  def add_scalar(self, *args, **kwargs):
    pass

  def close(self):
    pass


class _Stop:
  """SIGTERM / SIGINT ask the loop to checkpoint and stop after the current step."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def agreed(self) -> str | None:
    """The signal any process received (SIGTERM over SIGINT), the same on every process, so
    that all of them checkpoint the same step and stop together."""
    if jax.process_count() == 1:
      return self.signal
    names = (None, 'SIGINT', 'SIGTERM')
    code = multihost_utils.process_allgather(np.int32(names.index(self.signal))).max()
    return names[int(code)]

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_iterator(config: ml_collections.ConfigDict, mcfg: models.ModelConfig):
  """``(iterator, sources)``: the checkpointable iterator over this process's share of the
  training batches (one stream per task with the training transforms, zipped) and each task's
  training source."""
  sources = _sources(config, 'train')
  augment = transforms.AugmentConfig(**config.data.get('augment', {}))
  tasks = []
  for name, t in config.tasks.items():
    schema = mcfg.task(name).skeleton
    tasks.append(pipeline.TaskData(
        name, schema, sources[name], t.batch_size,
        tuple(transforms.train_transforms(schema, mcfg.image_size, augment))))
  dataset = pipeline.train_dataset(tasks, seed=config.seed, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  iterator = pipeline.make_iterator(dataset, num_workers=config.data.num_workers,
                                    num_threads=config.data.threads,
                                    prefetch_batches=config.data.prefetch_batches,
                                    priority=config.data.get('builder_priority', 10))
  return iterator, sources


def to_device(batch: Mapping[str, Mapping[str, Any]], sharding: jax.sharding.Sharding) -> dict:
  """A host batch as the step takes it: each task's images and keypoints as global arrays
  (batch axis over ``sharding``) made from this process's share."""
  return {t: {k: jax.make_array_from_process_local_data(sharding, np.asarray(b[k]))
              for k in _DEVICE_KEYS} for t, b in batch.items()}


def make_optimizer(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, params, *,
                   total_steps: int, steps_per_epoch: int):
  """The run's optimizer (``config.optimizer``, ``config.trainable``) and learning-rate schedule
  (``config.schedule``, epochs converted with ``steps_per_epoch``): ``(tx, lr_schedule)``."""
  sched_cfg = config.schedule
  lr_schedule = optim.schedule(
      base_lr=config.optimizer.lr, total_steps=total_steps,
      warmup_steps=sched_cfg.warmup_steps, warmup_ratio=sched_cfg.warmup_ratio,
      kind=sched_cfg.kind,
      decay_steps=tuple(int(e * steps_per_epoch) for e in sched_cfg.decay_epochs),
      decay_factor=sched_cfg.decay_factor, min_lr_ratio=sched_cfg.min_lr_ratio)
  opt = config.optimizer
  tx = optim.make_optimizer(params, depth=mcfg.depth, trainable=_trainable(config, mcfg),
                            weight_decay=opt.weight_decay, layer_decay=opt.layer_decay,
                            schedule=lr_schedule, b1=opt.b1, b2=opt.b2, eps=opt.get('eps', 1e-8),
                            clip_norm=opt.clip_norm)
  return tx, lr_schedule


def init_state(params, batch_stats, tx: optax.GradientTransformation, seed: int) -> dict:
  """The training state the step carries: parameters, BatchNorm statistics, optimizer state,
  step counter and rng key data."""
  return {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params),
          'step': jnp.zeros((), jnp.int32), 'rng': jax.random.key_data(jax.random.key(seed))}


def make_train_step(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, graphdef,
                    tx: optax.GradientTransformation, lr_schedule: optax.Schedule, *,
                    sharding: jax.sharding.Sharding, teacher_graphdef=None):
  """The jitted training step ``(state, batch, teacher_state) -> (state, metrics)``: the state
  (see :func:`init_state`) is donated and comes back with ``sharding``; ``batch`` is
  ``{task: {'image', 'keypoints'}}``; ``teacher_state`` is None without heatmap distillation."""
  # Training only knowledge tokens (distillation stage 1) runs the frozen network in inference
  # mode: BatchNorm uses and keeps its running statistics, drop-path is off.
  train_mode = config.get('trainable', 'all') != 'tokens'
  kd_weight = float(config.get('heatmap_distill_weight', 0.0))
  joint_weights = {t.name: jnp.asarray(t.skeleton.joint_weights) for t in mcfg.tasks}
  loss_weights = {name: float(t.loss_weight) for name, t in config.tasks.items()}

  def train_step(state, batch, teacher_state):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state['rng']))
    images = {t: b['image'] for t, b in batch.items()}
    if teacher_state is not None:
      teacher_heatmaps, _ = nnx.merge(teacher_graphdef, teacher_state)(images)

    def loss_fn(params, batch_stats):
      # BatchNorm updates its statistics in place, and NNX allows that only on variables made in
      # the running trace: rebuilding the pytree makes fresh ones here.
      net = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, batch_stats))
      heatmaps, _ = net(images, train=train_mode, rng=step_rng)
      losses = {}
      for t, b in batch.items():
        target, weight = mcfg.codec.encode(b['keypoints'])
        losses[t] = codec.joints_mse(heatmaps[t], target, weight, joint_weights[t])
      total = sum(loss_weights[t] * losses[t] for t in losses)
      if teacher_state is not None:
        for t in batch:
          losses[f'{t}_kd'] = codec.heatmap_distillation(heatmaps[t], teacher_heatmaps[t])
          total += kd_weight * loss_weights[t] * losses[f'{t}_kd']
      return total, (losses, nnx.state(net, nnx.BatchStat))

    (loss, (losses, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], state['batch_stats'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads),
               'train/param_norm': optax.tree.norm(params),
               'train/lr': lr_schedule(state['step'])}
    metrics.update({f'train/{t}_loss': v for t, v in losses.items()})
    new_state = {'params': params, 'batch_stats': stats, 'opt_state': opt_state,
                 'step': state['step'] + 1, 'rng': jax.random.key_data(rng)}
    return new_state, metrics

  # One sharding stands for every leaf of both outputs.
  return jax.jit(train_step, out_shardings=sharding, donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from ``workdir`` when it holds checkpoints), evaluates, writes the run
  directory and returns the final metrics."""
  from tensorboardX import SummaryWriter

  _check_test_seeds(config)
  config = resolve_evals(config)
  os.makedirs(workdir, exist_ok=True)
  mcfg = model_config(config)
  check_run_directory(workdir, mcfg)
  devices = jax.devices()
  mesh = Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P('data'))
  fit_batches_to_devices(config, len(devices))

  # Data: one stream per task, zipped into global batches; the host feeds its local share.
  iterator, sources = train_iterator(config, mcfg)

  # Durations are converted to steps once, here.
  epoch_task = config.get('epoch_task') or next(iter(config.tasks))
  steps_per_epoch = max(1, len(sources[epoch_task]) // config.tasks[epoch_task].batch_size)
  global_batch = sum(t.batch_size for t in config.tasks.values())
  total_steps = optim.steps_from(config, steps_per_epoch=steps_per_epoch, batch_size=global_batch)

  model = models.create_model(mcfg, seed=config.seed,
                              kernels=backend.resolve_kernels(mcfg, devices[0]))
  if config.init_from:
    loaded = _init_from(model, config.init_from, config.get('expert_from', {}),
                        shared_keypoints=config.get('init_shared_keypoints', True))
    logging.info('init_from %s: loaded %s', config.init_from, loaded)
    if jax.process_index() == 0:
      print(f'init_from {config.init_from}: loaded {", ".join(loaded)}', flush=True)
  elif config.get('expert_from'):
    raise TrainingError('config.expert_from needs config.init_from')
  if config.get('tokens_from'):
    print(f'loaded {_knowledge_source(model, config.tokens_from)}', flush=True)
  # Heatmap distillation (stage 2): the teacher runs in inference mode inside the jitted step.
  kd_weight = float(config.get('heatmap_distill_weight', 0.0))
  teacher = _teacher(config.teacher, mcfg) if kd_weight and config.get('teacher') else None
  if kd_weight and teacher is None:
    raise TrainingError('config.heatmap_distill_weight > 0 needs config.teacher=RUN')
  teacher_graphdef, teacher_state = (nnx.split(teacher) if teacher is not None
                                     else (None, None))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  tx, lr_schedule = make_optimizer(config, mcfg, params, total_steps=total_steps,
                                   steps_per_epoch=steps_per_epoch)
  state = init_state(params, batch_stats, tx, config.seed)
  state = jax.device_put(state, replicated)
  teacher_state = jax.device_put(teacher_state, replicated)

  if config.get('trainable', 'all') == 'tokens' and not mcfg.num_knowledge_tokens:
    raise TrainingError("config.trainable is 'tokens' but config.model.knowledge_tokens is 0")
  step_fn = make_train_step(config, mcfg, graphdef, tx, lr_schedule, sharding=replicated,
                            teacher_graphdef=teacher_graphdef)

  # Run directory and resumption. Process 0 writes the files; every process takes part in
  # checkpointing (Orbax coordinates them).
  primary = jax.process_index() == 0
  if primary:
    write_run_description(workdir, config, mcfg)
  # Retention is ours (the last `keep` steps plus the best one); Orbax's best_fn would keep the
  # best N instead of the last N.
  mngr = checkpoint.manager(workdir)
  best_metric = config.checkpoint.get('best_metric') or ''
  best = checkpoint.read_best(workdir)

  def save(step: int):
    net = nnx.merge(graphdef, state['params'], state['batch_stats'])
    mngr.save(step, args=ocp.args.Composite(**{
        checkpoint.MODEL_ITEM: ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(net))),
        'opt_state': ocp.args.StandardSave(state['opt_state']),
        'train': ocp.args.StandardSave({'step': state['step'], 'rng': state['rng']}),
        'data': ocp.args.JsonSave(iterator.get_state()),
    }), force=True)

  def prune():
    mngr.wait_until_finished()
    steps = sorted(mngr.all_steps())
    keep = set(steps[-config.checkpoint.keep:]) if config.checkpoint.keep else set(steps)
    if best is not None:
      keep.add(best['step'])
    for s in steps:
      if s not in keep:
        mngr.delete(s)

  def evaluate_at(step: int) -> dict[str, Any]:
    """Every process evaluates, the batches split over the mesh; all then agree on whether this
    step is the best so far, since saving is collective."""
    nonlocal best
    metrics = _evaluate(nnx.merge(graphdef, state['params'], state['batch_stats']), config,
                        workdir, step, writer, mesh)
    if primary:
      # One line per evaluation: the learning curve of the run, which TensorBoard also holds
      # but which scripts should not need TensorBoard to read.
      with open(os.path.join(workdir, 'evals.jsonl'), 'a') as f:
        f.write(json.dumps({'step': step, 'samples_seen': step * global_batch,
                            **{k: v for k, v in metrics.items()
                               if isinstance(v, (int, float))}}) + '\n')
    if best_metric:
      value = metrics.get(best_metric)
      if primary and value is None:
        logging.warning('checkpoint.best_metric %r is not among the evaluation metrics %s',
                        best_metric, sorted(metrics))
      if jax.process_count() > 1:
        value = float(multihost_utils.broadcast_one_to_all(
            np.float64(np.nan if value is None else value)))
        value = None if np.isnan(value) else value
      if value is not None and (best is None or value > best['value']):
        if mngr.latest_step() != step:
          save(step)
        best = {'metric': best_metric, 'value': float(value), 'step': step}
        if primary:
          checkpoint.write_best(workdir, best)
    prune()
    return metrics

  start = mngr.latest_step()
  if start is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)
    net = nnx.merge(graphdef, state['params'], state['batch_stats'])
    restored = mngr.restore(start, args=ocp.args.Composite(**{
        checkpoint.MODEL_ITEM: ocp.args.StandardRestore(
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                         nnx.to_pure_dict(nnx.state(net)))),
        'opt_state': ocp.args.StandardRestore(abstract['opt_state']),
        'train': ocp.args.StandardRestore({'step': abstract['step'], 'rng': abstract['rng']}),
        'data': ocp.args.JsonRestore(),
    }))
    net_state = nnx.state(net)
    nnx.replace_by_pure_dict(net_state, restored[checkpoint.MODEL_ITEM])
    nnx.update(net, net_state)
    _, params, batch_stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    state = {'params': params, 'batch_stats': batch_stats, 'opt_state': restored['opt_state'],
             'step': restored['train']['step'], 'rng': restored['train']['rng']}
    iterator.set_state(restored['data'])
    logging.info('resumed from step %d', start)
    print(f'resuming {workdir} from step {start}', flush=True)
  step = int(state['step'].addressable_data(0))

  writer = SummaryWriter(workdir) if primary else _NullWriter()
  last_loss = float('nan')
  t_log, n_log = time.perf_counter(), 0
  t_start = time.perf_counter()
  with _Stop() as stop:
    while step < total_steps:
      batch = to_device(next(iterator), sharded)
      state, metrics = step_fn(state, batch, teacher_state)
      step += 1
      n_log += 1
      # Replicated values are read from this host's copy: across processes a global array is not
      # fully addressable.
      metrics = {k: float(v.addressable_data(0)) for k, v in metrics.items()}
      loss = metrics['train/loss']
      if not np.isfinite(loss):
        writer.close()
        raise TrainingError(f'non-finite loss {loss} at step {step}; the last checkpoint '
                            f'(step {mngr.latest_step()}) is intact')
      last_loss = loss
      if step % config.log_every_steps == 0 or step == total_steps:
        now = time.perf_counter()
        rate = n_log * global_batch / (now - t_log)
        for k, v in metrics.items():
          writer.add_scalar(k, v, step)
        writer.add_scalar('train/img_per_s', rate, step)
        eta = (total_steps - step) * (now - t_start) / max(1, step - (start or 0))
        if primary:
          print(f'step {step}/{total_steps}  loss {loss:.7g}  lr {metrics["train/lr"]:.2e}  '
                f'{rate:.1f} img/s  ETA {eta / 60:.1f} min', flush=True)
        t_log, n_log = now, 0
      signal_name = stop.agreed()
      if step % config.checkpoint.every_steps == 0 or signal_name:
        save(step)
        prune()
      if signal_name:
        mngr.wait_until_finished()
        print(f'{signal_name}: checkpoint written at step {step}; stopping', flush=True)
        writer.close()
        raise SystemExit(143 if signal_name == 'SIGTERM' else 130)
      if (config.eval_every_steps and step % config.eval_every_steps == 0
          and step < total_steps):
        evaluate_at(step)
  if mngr.latest_step() != step:
    save(step)
  final = evaluate_at(step)
  prune()
  final.update({'step': step, 'train/loss': last_loss})
  if primary:
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(final, f, indent=1)
  writer.close()
  mngr.close()
  return final


def metric_summary(metrics: Mapping[str, Any]) -> str:
  keys = sorted(k for k in metrics if k.endswith('/AP') or k == 'mean/AP')
  return ', '.join(f'{k} {metrics[k]:.3f}' for k in keys)
