"""Multi-task training: ``train_and_evaluate(config, workdir)`` → final metrics.

One factorized model, one global batch per step holding every task's share (static shapes), a
``jax.jit`` step over a 1-D device ``Mesh`` (axis ``data``: batch sharded, state replicated and
donated). Heatmap targets are made on device from the batch's crop keypoints; each task's
JointsMSE is averaged over that task's own samples, then weighted by its ``loss_weight``.

The run directory (docs/design.md): config.json, model.json, checkpoints/ (Orbax, written and kept
by :class:`checkpoint.TrainCheckpoints`: ``model``, ``opt_state``, ``train`` (step, rng) and
``data`` (the grain iterator state) per step), best.json, metrics.json, metrics.jsonl (one line per
log step: step and the logged scalars), evals.jsonl (one line per evaluation: step, samples seen
and the metrics), TensorBoard events, plots/. Re-running on the same workdir resumes; a config of
another model is refused before anything is written (:func:`check_run_directory`), and a changed
config.json is kept beside the new one (:func:`write_run_description`).
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
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import backend, checkpoint, codec, feature_cache, models, optim, skeletons
from vitpose_jax.adapt import adversarial, crossschema, meanteacher
from vitpose_jax.data import pipeline, transforms
from vitpose_jax.data.coco import DataError
from vitpose_jax.data import sources as data_sources  # `sources` names the opened ones here
from vitpose_jax.draw import draw_pose

_DEVICE_KEYS = ('image', 'keypoints', 'keypoint_weights', 'source_index')
# A mean-teacher target task's batches add the teacher's view and the student's mask
# (transforms.TwoViews).
_VIEW_KEYS = ('image_weak', 'view_transform', 'view_flip', 'mask_distance', 'mask_weight')
METHODS = ('', 'meanteacher', 'adversarial', 'crossschema')


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss, an inconsistent config); the message says where."""


TRAINABLE = ('all', 'experts+heads', 'heads', 'tokens')


def model_task(config: ml_collections.ConfigDict, name: str) -> str:
  """The model task whose expert and head task ``name`` trains: ``tasks.<name>.model_task``
  when set (a data stream of another task, e.g. its unlabeled target images), else the task
  itself."""
  return config.tasks[name].get('model_task') or name


def model_tasks(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
  """``(name, task config)`` of the tasks the model has: those trained through their own head.
  TrainingError when a task names a ``model_task`` that is not one of them, or another schema."""
  own = [(name, t) for name, t in config.tasks.items() if model_task(config, name) == name]
  names = {name for name, _ in own}
  for name, t in config.tasks.items():
    target = model_task(config, name)
    if target == name:
      continue
    if target not in names:
      raise TrainingError(f'tasks.{name}.model_task {target!r} is not a task with its own head '
                          f'({", ".join(sorted(names))})')
    if t.schema != config.tasks[target].schema:
      raise TrainingError(f'tasks.{name}.schema {t.schema!r} differs from the schema of its '
                          f'model_task {target!r} ({config.tasks[target].schema!r})')
  return own


def model_config_from_training(config: ml_collections.ConfigDict) -> models.ModelConfig:
  """The network a training config describes (``config.model`` + one task per
  ``config.tasks`` entry with its own head: :func:`model_tasks`). ``config.model.variant = 'init_from'`` takes the network's geometry (width,
  depth, P, decoder, input size) from the run ``config.init_from`` names, with the config's tasks.
  """
  m = config.model
  if m.variant == 'init_from':
    return _geometry_from_init(config)
  variant = models.VARIANTS[m.variant]
  expert_dim = variant.expert_dim if m.expert_dim < 0 else m.expert_dim
  tasks = tuple(
      models.TaskSpec(name, skeletons.get(t.schema), expert=t.get('expert', i), head=m.decoder)
      for i, (name, t) in enumerate(model_tasks(config)))
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
  """The ``init_from`` run's network with the config's tasks; ``config.data.sigma`` 0 keeps the
  source's target σ."""
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
      for i, (name, t) in enumerate(model_tasks(config)))
  return dataclasses.replace(
      source, tasks=tasks,
      num_experts=max(t.expert for t in tasks) + 1 if factorized else 0,
      drop_path=m.drop_path, remat=m.remat, dtype=m.dtype, attention=m.get('attention', 'auto'),
      num_knowledge_tokens=m.get('knowledge_tokens', 0),
      # 0: the source's own target σ (its codec record), e.g. Sapiens' 6 at 256×192 heatmaps.
      heatmap_sigma=config.data.sigma or source.heatmap_sigma)


def _trainable(config, mcfg: models.ModelConfig):
  """The parameters the run trains (``config.trainable``), as optim.make_optimizer's predicate.
  Tokens that come from another model (``knowledge_source_width``) never train."""
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
  from vitpose_jax.synthetic import TEST_SEED_START

  specs = {f'tasks.{name}.{k}': t[k] for name, t in config.tasks.items() for k in ('train', 'val')}
  prior = (config.get('adapt') or {}).get('prior') or {}
  if prior.get('poses') is not None:
    specs['adapt.prior.poses'] = prior['poses']
  for key, spec in specs.items():
    if spec.get('source') == 'synthetic' and int(spec.get('seed', 0)) >= TEST_SEED_START:
      raise TrainingError(f'{key}: synthetic seed {spec.seed} is a test seed '
                          f'(>= {TEST_SEED_START}): test seeds are never used for training, '
                          'checkpoint selection or tuning')


def labelled_tasks(config: ml_collections.ConfigDict) -> set[str]:
  """The tasks whose training data has labels (a data spec's ``labels``, default True): only
  they have a supervised loss."""
  out = set()
  for name, t in config.tasks.items():
    for split in ('train', 'val'):
      try:
        labelled = data_sources.has_labels(t[split])
      except DataError as e:
        raise DataError(f'tasks.{name}.{split}: {e}') from None
      if split == 'train' and labelled:
        out.add(name)
  return out


def _unlabelled_users(config: ml_collections.ConfigDict, method: str) -> set[str]:
  """The tasks ``method`` trains without labels: the mean teacher's target, the adversarial
  domains' streams, the cross-schema teacher's streams (every stream of the target's head)."""
  adapt = config.adapt
  if method == 'meanteacher':
    return {adapt.target}
  if method == 'adversarial':
    return {s for streams in (adapt.get('domains') or {}).values() for s in streams}
  head = model_task(config, adapt.target)
  return {name for name in config.tasks if model_task(config, name) == head}


def _adaptation(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, *,
                total_steps: int = 1):
  """The run's adaptation method (``config.adapt.method``): a
  :class:`~vitpose_jax.adapt.meanteacher.MeanTeacher`,
  :class:`~vitpose_jax.adapt.adversarial.Adversarial` (its λ ramp over ``total_steps``) or
  :class:`~vitpose_jax.adapt.crossschema.CrossSchema`, or None. TrainingError for an unknown
  method, a target or stream that is not a task, or an unlabelled task that nothing would train."""
  adapt = config.get('adapt') or ml_collections.ConfigDict({'method': ''})
  unlabelled = sorted(set(config.tasks) - labelled_tasks(config))
  if adapt.method not in METHODS:
    raise TrainingError(f'config.adapt.method {adapt.method!r} is not one of '
                        f'{", ".join(repr(m) for m in METHODS)}')
  if not adapt.method:
    if unlabelled:
      raise TrainingError(f'tasks {unlabelled} have labels=False training data but '
                          'config.adapt.method is empty: no loss would train them (use '
                          'configs/adapt.py:method=meanteacher)')
    return None
  if adapt.method != 'adversarial' and adapt.get('target') not in config.tasks:
    raise TrainingError(f'config.adapt.target {adapt.get("target")!r} is not a task '
                        f'({", ".join(config.tasks)})')
  # The domains are checked first: they decide which streams the method trains without labels.
  aligner = _adversarial(config, total_steps) if adapt.method == 'adversarial' else None
  users = _unlabelled_users(config, adapt.method)
  others = [t for t in unlabelled if t not in users]
  if others:
    raise TrainingError(f'tasks {others} have labels=False training data but '
                        f'config.adapt.method {adapt.method!r} trains only {sorted(users)} '
                        'without labels')
  if aligner is not None:
    return aligner
  if adapt.method == 'crossschema':
    return _cross_schema(config, mcfg)
  return _mean_teacher(config, mcfg)


def _adversarial(config: ml_collections.ConfigDict, total_steps: int):
  adapt = config.adapt
  domains = adapt.get('domains') or {}
  if len(domains) != 2:
    raise TrainingError(f'config.adapt.domains must name two domains, each a list of task '
                        f'streams; got {dict(domains)!r}')
  for name, streams in domains.items():
    if isinstance(streams, str):
      raise TrainingError(f'config.adapt.domains.{name} {streams!r} is a string: give a list of '
                          f'task streams, e.g. ({streams!r},)')
    unknown = [s for s in streams if s not in config.tasks]
    if not streams or unknown:
      raise TrainingError(f'config.adapt.domains.{name} {tuple(streams)!r}: '
                          + (f'{unknown} are not tasks ({", ".join(config.tasks)})' if unknown
                             else 'no task streams'))
  (first, a), (second, b) = domains.items()
  both = sorted(set(a) & set(b))
  if both:
    raise TrainingError(f'config.adapt.domains: {both} are in both {first} and {second}')
  return adversarial.Adversarial(
      domains=((first, tuple(a)), (second, tuple(b))), weight=adapt.domain_weight,
      max_lambda=adapt.max_lambda, gamma=adapt.lambda_gamma, hidden=adapt.domain_hidden,
      learning_rate=adapt.domain_lr, total_steps=total_steps)


def _cross_schema(config: ml_collections.ConfigDict, mcfg: models.ModelConfig):
  """The cross-schema teacher's term (the teacher itself is loaded with the model)."""
  adapt = config.adapt
  if not adapt.get('teacher'):
    raise TrainingError("config.adapt.method is 'crossschema' but config.adapt.teacher (a run "
                        'directory or zoo: name) is empty')
  teacher = models.ModelConfig.load(adapt.teacher)
  task = adapt.get('teacher_task') or ''
  if not task:
    if len(teacher.task_names) != 1:
      raise TrainingError(f'config.adapt.teacher {adapt.teacher} has tasks '
                          f'{list(teacher.task_names)}: name one in config.adapt.teacher_task')
    task = teacher.task_names[0]
  if task not in teacher.task_names:
    raise TrainingError(f'config.adapt.teacher_task {task!r} is not a task of '
                        f'{adapt.teacher} ({", ".join(teacher.task_names)})')
  for what, ours, theirs in (('input size', mcfg.image_size, teacher.image_size),
                             ('heatmap size', mcfg.heatmap_size, teacher.heatmap_size)):
    if tuple(ours) != tuple(theirs):
      raise TrainingError(f'config.adapt.teacher {adapt.teacher}: {what} {tuple(theirs)} != the '
                          f"student's {tuple(ours)} (it reads the student's crops)")
  head = model_task(config, adapt.target)
  try:
    teacher_index, student_index = crossschema.shared_channels(teacher.task(task).schema,
                                                               mcfg.task(head).schema)
  except crossschema.CrossSchemaError as e:
    raise TrainingError(f'config.adapt.teacher {adapt.teacher}: {e}') from None
  streams = tuple(name for name in config.tasks if model_task(config, name) == head)
  if jax.process_index() == 0:
    print(f'cross-schema teacher {adapt.teacher} ({task}, {teacher.task(task).schema.name}) → '
          f'{head} ({mcfg.task(head).schema.name}): {len(student_index)} shared keypoints, on '
          f'{", ".join(streams)}', flush=True)
  return crossschema.CrossSchema(teacher_task=task, streams=streams,
                                 teacher_index=teacher_index, student_index=student_index,
                                 weight=adapt.distill_weight,
                                 threshold=adapt.get('teacher_confidence', 0.0))


def _mean_teacher(config: ml_collections.ConfigDict, mcfg: models.ModelConfig):
  adapt = config.adapt
  schema = mcfg.task(model_task(config, adapt.target)).schema
  prior, prior_margin = None, 0.0
  if adapt.prior.weight:
    from vitpose_jax.adapt import prior as prior_lib

    if adapt.prior.get('poses') is None:
      raise TrainingError('config.adapt.prior.weight is set but config.adapt.prior.poses (a data '
                          'spec of target-schema poses) is not')
    annotations, _ = data_sources.files(adapt.prior.poses.to_dict(), 'train')
    poses, visible = prior_lib.read_poses(annotations, schema)
    prior = prior_lib.fit_pose_prior(poses, visible, schema, components=adapt.prior.components,
                                     seed=config.seed, source=annotations)
    # Penalise only poses less plausible than most of the target's own: the mixture's density
    # keeps rising toward its modes, and a penalty without a floor pulls every pose toward them.
    full = (visible > 0).all(-1)
    prior_margin = float(np.quantile(np.asarray(prior.nll(poses[full])), adapt.prior.quantile))
    if jax.process_index() == 0:
      print(f'pose prior: a {prior.components}-component Gaussian mixture over the normalised '
            f'poses of {adapt.prior.poses.to_dict()}; penalised above {prior_margin:.2f} nats '
            f'(its {adapt.prior.quantile:g} quantile on those poses)', flush=True)
  return meanteacher.MeanTeacher(
      target=adapt.target, model_task=model_task(config, adapt.target), decay=adapt.ema_decay, threshold=adapt.confidence,
      consistency_weight=adapt.consistency_weight, flip_index=tuple(schema.flip_index),
      input_size=mcfg.image_size, heatmap_size=mcfg.heatmap_size, beta=adapt.soft_argmax_beta,
      prior=prior, prior_weight=adapt.prior.weight, prior_margin=prior_margin,
      silhouette_weight=adapt.silhouette_weight)


def _sources(config, split_key: str):
  # Every task's train and val files at once: a generated kind makes them in parallel.
  data_sources.prepare([(t[k].to_dict(), k) for t in config.tasks.values()
                        for k in ('train', 'val')])
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
    head = model_task(config, name)
    schema = predictor.config.task(head).schema
    tiles = []
    for i in range(min(config.plots, len(source))):
      element = source[i]
      (instance,) = predictor.predict_image(head, element['image'], [element['bbox'].tolist()])
      tiles.append(draw_pose(element['image'], [instance['keypoints']], schema,
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
  with it. An entry's ``task`` may name a stream that trains another task's head
  (:func:`model_task`): it evaluates that head on the stream's validation data."""
  from vitpose_jax.synthetic import TEST_SEED_START

  config = copy.deepcopy(config)
  with config.unlocked():
    for name, spec in config.evals.items():
      task = spec.get('task', name)
      where = f'evals.{name}.data'
      if spec.get('data') is None:
        if task not in config.tasks:
          raise TrainingError(f'evals.{name}: no data and no task {task!r} to take it from')
        spec.data = ml_collections.ConfigDict(config.tasks[task].val.to_dict())
        where = f'tasks.{task}.val'
      if task in config.tasks and model_task(config, task) != task:
        spec.task = model_task(config, task)
      data = spec.data
      if not data_sources.has_labels(data):
        raise TrainingError(f'evals.{name}: its data ({where}) has no labels (labels=False, or '
                            f'a detections spec); evaluation needs labelled data')
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


def train_iterator(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, *,
                   indexed: bool = False):
  """``(iterator, sources)``: the checkpointable iterator over this process's share of the
  training batches (one stream per task with the training transforms, zipped) and each task's
  training source. A mean-teacher run's target task gets two views of each crop
  (:class:`transforms.TwoViews`, ``config.adapt.weak_augment`` and ``strong_augment``).
  ``indexed``: every sample carries its ``source_index`` (:mod:`vitpose_jax.feature_cache`)."""
  sources = _sources(config, 'train')
  if indexed:
    sources = {name: feature_cache.IndexedSource(s) for name, s in sources.items()}
  augment = transforms.AugmentConfig(**config.data.get('augment', {}))
  adapt = config.get('adapt') or {}
  tasks = []
  for name, t in config.tasks.items():
    schema = mcfg.task(model_task(config, name)).schema
    if adapt.get('method') == 'meanteacher' and name == adapt.target:
      steps = (transforms.TwoViews(
          schema, mcfg.image_size, weak=transforms.AugmentConfig(**adapt.weak_augment),
          strong=transforms.AugmentConfig(**adapt.strong_augment)),)
    else:
      steps = tuple(transforms.train_transforms(schema, mcfg.image_size, augment))
    tasks.append(pipeline.TaskData(name, schema, sources[name], t.batch_size, steps))
  dataset = pipeline.train_dataset(tasks, seed=config.seed, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  iterator = pipeline.make_iterator(dataset, num_workers=config.data.num_workers,
                                    num_threads=config.data.threads,
                                    prefetch_batches=config.data.prefetch_batches,
                                    priority=config.data.get('builder_priority', 10))
  return iterator, sources


def to_device(batch: Mapping[str, Mapping[str, Any]], sharding: jax.sharding.Sharding, *,
              images: bool = True) -> dict:
  """A host batch as the step takes it: each task's images, keypoints and keypoint weights (and
  a mean-teacher target's second view and mask, and the ``source_index`` of a feature-cached
  run) as global arrays (batch axis over ``sharding``) made from this process's share.
  ``images`` False leaves the images on the host (a feature-cached step does not read them)."""
  keys = [k for k in (*_DEVICE_KEYS, *_VIEW_KEYS) if images or k != 'image']
  return {t: {k: jax.make_array_from_process_local_data(sharding, np.asarray(b[k]))
              for k in keys if k in b} for t, b in batch.items()}


def optimizer_and_schedule(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, params, *,
                           total_steps: int, steps_per_epoch: int):
  """The run's optimizer (``config.optimizer``, ``config.trainable``) and learning-rate schedule
  (``config.schedule``, epochs converted with ``steps_per_epoch``): ``(tx, lr_schedule)``."""
  sched_cfg = config.schedule
  try:
    lr_schedule = optim.schedule(
        base_lr=config.optimizer.lr, total_steps=total_steps,
        warmup_steps=sched_cfg.warmup_steps, warmup_ratio=sched_cfg.warmup_ratio,
        kind=sched_cfg.kind,
        decay_steps=tuple(int(e * steps_per_epoch) for e in sched_cfg.decay_epochs),
        decay_factor=sched_cfg.decay_factor, min_lr_ratio=sched_cfg.min_lr_ratio)
  except ValueError as e:
    raise TrainingError(f'config.schedule (warmup_steps {sched_cfg.warmup_steps}, kind '
                        f'{sched_cfg.kind!r}) for a run of {total_steps} steps: {e}') from None
  opt = config.optimizer
  tx = optim.make_optimizer(params, depth=mcfg.depth, trainable=_trainable(config, mcfg),
                            weight_decay=opt.weight_decay, layer_decay=opt.layer_decay,
                            schedule=lr_schedule, b1=opt.b1, b2=opt.b2, eps=opt.get('eps', 1e-8),
                            clip_norm=opt.clip_norm)
  return tx, lr_schedule


def init_state(params, batch_stats, tx: optax.GradientTransformation, seed: int, *,
               teacher: bool = False, domain=None) -> dict:
  """The training state the step carries: parameters, BatchNorm statistics, optimizer state,
  step counter and rng key data; with ``teacher``, a mean teacher's copy of the parameters and
  statistics (``teacher``: ``{'params', 'batch_stats'}``), which starts as the student; with
  ``domain`` = ``(classifier parameters, its optimizer)``, an adversarial run's domain classifier
  (``domain``: ``{'params', 'opt_state'}``)."""
  state = {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params),
           'step': jnp.zeros((), jnp.int32), 'rng': jax.random.key_data(jax.random.key(seed))}
  if teacher:
    state['teacher'] = jax.tree.map(jnp.copy, {'params': params, 'batch_stats': batch_stats})
  if domain is not None:
    domain_params, domain_tx = domain
    state['domain'] = {'params': domain_params, 'opt_state': domain_tx.init(domain_params)}
  return state


def make_train_step(config: ml_collections.ConfigDict, mcfg: models.ModelConfig, graphdef,
                    tx: optax.GradientTransformation, lr_schedule: optax.Schedule, *,
                    sharding: jax.sharding.Sharding, teacher_graphdef=None,
                    adaptation=None, labelled: set[str] | None = None):
  """The jitted training step ``(state, batch, teacher_state, cache=None) -> (state, metrics)``:
  the state (see :func:`init_state`) is donated and comes back with ``sharding``; ``batch`` is
  ``{task: {'image', 'keypoints', 'keypoint_weights'}}`` (a mean-teacher target adds the
  :class:`transforms.TwoViews` keys); ``teacher_state`` is None without heatmap distillation.

  ``config.trainable = 'heads'`` runs the backbone frozen (inference mode, no gradient). Given
  ``cache`` (``{task: (N, rows, cols, width)}``, :func:`feature_cache.build`), the step takes
  each sample's feature map from it by the batch's ``source_index`` and runs no backbone at all:
  the same function of the heads as the uncached step.

  Only the ``labelled`` tasks (default: all) have a supervised loss. ``adaptation`` (see
  :func:`_adaptation`) adds its terms:

  - a :class:`~vitpose_jax.adapt.meanteacher.MeanTeacher`: the EMA teacher in
    ``state['teacher']`` runs in inference mode on the target's weak views, the student's strong
    views learn its mapped heatmaps (plus the prior and silhouette terms), and the teacher then
    moves toward the updated student;
  - an :class:`~vitpose_jax.adapt.adversarial.Adversarial`: the domain classifier in
    ``state['domain']`` reads the domains' pooled patch tokens through gradient reversal and
    takes its own Adam step;
  - a :class:`~vitpose_jax.adapt.crossschema.CrossSchema`: the model of ``teacher_state`` (the
    cross-schema teacher) runs on the student head's streams, and its heatmaps of the shared
    keypoints teach the student's channels of them."""
  # Training only knowledge tokens (distillation stage 1) runs the frozen network in inference
  # mode: BatchNorm uses and keeps its running statistics, drop-path is off.
  train_mode = config.get('trainable', 'all') != 'tokens'
  frozen_backbone = config.get('trainable', 'all') == 'heads'
  kd_weight = float(config.get('heatmap_distill_weight', 0.0))
  heads = {name: model_task(config, name) for name in config.tasks}
  joint_weights = {name: jnp.asarray(mcfg.task(heads[name]).schema.joint_weights)
                   for name in config.tasks}
  loss_weights = {name: float(t.loss_weight) for name, t in config.tasks.items()}
  labelled = set(config.tasks) if labelled is None else set(labelled)
  mean_teacher = adaptation if isinstance(adaptation, meanteacher.MeanTeacher) else None
  aligner = adaptation if isinstance(adaptation, adversarial.Adversarial) else None
  cross = adaptation if isinstance(adaptation, crossschema.CrossSchema) else None
  if aligner is not None:
    classifier_graphdef = nnx.graphdef(nnx.eval_shape(
        lambda: aligner.classifier(mcfg.width, config.seed)))
    domain_tx = aligner.optimizer()

  def forward(net, images, cached=None, **kwargs):
    """``({task: heatmaps}, {task: pooled patch tokens (n, C)})`` for ``{task: images}`` (or,
    given ``cached``, for ``{task: feature maps}`` through the heads alone): the tasks that
    train one model task's head (:func:`model_task`) go through it together, as one segment."""
    streams = images if cached is None else cached
    routes = {}
    for t in streams:
      routes.setdefault(heads[t], []).append(t)
    inputs = {m: jnp.concatenate([streams[t] for t in ts]) if len(ts) > 1 else streams[ts[0]]
              for m, ts in routes.items()}
    if cached is None:
      heatmaps, aux = net(inputs, **kwargs)
    else:
      heatmaps, aux = net.decode(inputs, train=kwargs.get('train', False))
    out, features = {}, {}
    for m, ts in routes.items():
      start = 0
      for t in ts:
        count = streams[t].shape[0]
        out[t] = heatmaps[m][start:start + count]
        if aligner is not None:
          features[t] = adversarial.pooled_tokens(aux[m]['patch_tokens'][start:start + count])
        start += count
    return out, features

  def train_step(state, batch, teacher_state, cache=None):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state['rng']))
    images = {t: b['image'] for t, b in batch.items() if 'image' in b}
    cached = None if cache is None else {
        t: jnp.take(cache[t], b['source_index'], axis=0) for t, b in batch.items()}
    if teacher_state is not None:
      teacher_net = nnx.merge(teacher_graphdef, teacher_state)
      if cross is not None:
        teacher_heatmaps = _teach_streams(teacher_net, cross, images)
      else:
        teacher_heatmaps, _ = forward(teacher_net, images)
    if mean_teacher is not None:
      target = mean_teacher.target
      ema = nnx.merge(graphdef, state['teacher']['params'], state['teacher']['batch_stats'])
      weak, _ = forward(ema, {target: batch[target]['image_weak']})
      pseudo = mean_teacher.teacher_targets(weak[target], batch[target])

    def loss_fn(params, batch_stats, domain_params):
      # BatchNorm updates its statistics in place, and NNX allows that only on variables made in
      # the running trace: rebuilding the pytree makes fresh ones here.
      net = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, batch_stats))
      heatmaps, features = forward(net, images, cached, train=train_mode, rng=step_rng,
                                   frozen_backbone=frozen_backbone)
      losses, terms = {}, {}
      for t, b in batch.items():
        if t not in labelled:
          continue
        target, weight = mcfg.codec.encode(b['keypoints'], b['keypoint_weights'])
        losses[t] = codec.joints_mse(heatmaps[t], target, weight, joint_weights[t])
      total = sum(loss_weights[t] * losses[t] for t in losses)
      if mean_teacher is not None:
        t = mean_teacher.target
        unsupervised, adapt_terms = mean_teacher.losses(heatmaps[t], pseudo, batch[t],
                                                        joint_weights[t])
        total += loss_weights[t] * unsupervised
        terms.update({f'{t}_{k}': v for k, v in adapt_terms.items()})
      if aligner is not None:
        domain, domain_terms = aligner.losses(nnx.merge(classifier_graphdef, domain_params),
                                                  features, state['step'])
        total += domain
        terms.update(domain_terms)
      if cross is not None:
        for t in cross.streams:
          losses[f'{t}_shared'], terms[f'{t}_shared_confident'] = cross.loss(
              heatmaps[t], teacher_heatmaps[t], joint_weights[t])
          total += cross.weight * loss_weights[t] * losses[f'{t}_shared']
      elif teacher_state is not None:
        for t in batch:
          losses[f'{t}_kd'] = codec.heatmap_distillation(heatmaps[t], teacher_heatmaps[t])
          total += kd_weight * loss_weights[t] * losses[f'{t}_kd']
      return total, (losses, terms, nnx.state(net, nnx.BatchStat))

    domain_params = state['domain']['params'] if aligner is not None else None
    (loss, (losses, terms, stats)), (grads, domain_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 2), has_aux=True)(state['params'], state['batch_stats'],
                                               domain_params)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads),
               'train/param_norm': optax.tree.norm(params),
               'train/lr': lr_schedule(state['step'])}
    metrics.update({f'train/{t}_loss': v for t, v in losses.items()})
    metrics.update({f'train/{k}': v for k, v in terms.items()})
    new_state = {'params': params, 'batch_stats': stats, 'opt_state': opt_state,
                 'step': state['step'] + 1, 'rng': jax.random.key_data(rng)}
    if mean_teacher is not None:
      new_state['teacher'] = meanteacher.ema_update(
          state['teacher'], {'params': params, 'batch_stats': stats}, mean_teacher.decay)
    if aligner is not None:
      domain_updates, domain_opt = domain_tx.update(domain_grads, state['domain']['opt_state'],
                                                    domain_params)
      new_state['domain'] = {'params': optax.apply_updates(domain_params, domain_updates),
                             'opt_state': domain_opt}
    return new_state, metrics

  # One sharding stands for every leaf of both outputs.
  return jax.jit(train_step, out_shardings=sharding, donate_argnums=0)


def _teach_streams(teacher, cross, images: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """``{stream: heatmaps}`` of the cross-schema ``teacher``'s ``cross.teacher_task`` head on
  each of ``cross.streams``' images, in one pass."""
  streams = cross.streams
  inputs = jnp.concatenate([images[t] for t in streams]) if len(streams) > 1 else images[streams[0]]
  heatmaps, _ = teacher({cross.teacher_task: inputs})
  out, start = {}, 0
  for t in streams:
    out[t] = heatmaps[cross.teacher_task][start:start + images[t].shape[0]]
    start += images[t].shape[0]
  return out


def _initial_model(config: ml_collections.ConfigDict, mcfg: models.ModelConfig,
                   device: jax.Device) -> models.VitPose:
  """The model before training, its kernels chosen for ``device``: fresh, with the weights
  ``config.init_from`` names loaded into it (see :func:`models.init_from`) and the knowledge
  tokens of ``config.tokens_from``."""
  model = models.create_model(mcfg, seed=config.seed,
                              kernels=backend.resolve_kernels(mcfg, device))
  if config.init_from:
    source, _ = checkpoint.load_model(config.init_from)
    try:
      loaded = models.init_from(model, source, config.get('expert_from', {}),
                                shared_keypoints=config.get('init_shared_keypoints', True))
    except models.ModelConfigError as e:
      raise TrainingError(f'init_from {config.init_from}: {e}') from None
    logging.info('init_from %s: loaded %s', config.init_from, loaded)
    if jax.process_index() == 0:
      print(f'init_from {config.init_from}: loaded {", ".join(loaded)}', flush=True)
  elif config.get('expert_from'):
    raise TrainingError('config.expert_from needs config.init_from')
  if config.get('tokens_from'):
    print(f'loaded {_knowledge_source(model, config.tokens_from)}', flush=True)
  return model


def _keep_rows_until(path: str, step: int) -> list[dict[str, Any]]:
  """Drops the lines of JSON-lines file ``path`` logged after ``step``: a resumed run redoes
  those steps, and its file stays one curve. Returns the rows kept."""
  try:
    with open(path) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return []
  rows = [json.loads(line) for line in lines]
  kept = [line for line, row in zip(lines, rows) if row['step'] <= step]
  if len(kept) < len(lines):
    _write(path, ''.join(kept))
  return [row for row in rows if row['step'] <= step]


def _append_row(path: str, row: Mapping[str, Any]):
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')


def fetch_metrics(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  """The train step's (replicated, scalar) metrics as host floats, in one transfer that waits for
  the step to finish."""
  # Read from this host's copy: across processes a global array is not fully addressable.
  local = jax.device_get({k: v.addressable_data(0) for k, v in metrics.items()})
  return {k: float(v) for k, v in local.items()}


class _Progress:
  """The loop's view of its metrics. The train step's metrics stay on the device until a step
  needs them (a log step, or one that checkpoints or evaluates): fetching them every step would
  make the host wait for the device each step. Each fetch checks the loss and the parameter norm
  (of the parameters after the update) for nan or inf, so a non-finite state is never saved or
  evaluated; the failure names the window of steps since the last check. Log steps go to
  TensorBoard, ``metrics.jsonl`` (one JSON object per log step) and stdout, on process 0."""

  def __init__(self, workdir: str, *, start: int, total_steps: int, global_batch: int):
    from tensorboardX import SummaryWriter

    self.primary = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    kept = _keep_rows_until(self.path, start) if self.primary else []
    self.writer = SummaryWriter(workdir) if self.primary else _NullWriter()
    self.start, self.total_steps, self.global_batch = start, total_steps, global_batch
    self.checked = self.logged = start
    # A resumed run that has no step left to train reports the loss logged at its last step
    # (None where that step was not logged).
    self.last_loss = next((r.get('train/loss') for r in reversed(kept) if r['step'] == start),
                          None)
    self.t_start = self.t_log = time.perf_counter()
    # Per teacher-confidence metric (``train/*_confident``): the log steps at which it was 0.
    self.unconfident: dict[str, list[int]] = {}
    self.log_steps = 0

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.writer.close()
    if self.primary:
      for key, steps in self.unconfident.items():
        # A teacher confident of no joint gives its consistency or distillation term no
        # weight: the run trained as if the term were off, which its numbers would not show.
        print(f'warning: {key} was 0 at {len(steps)} of {self.log_steps} logged steps (first '
              f'at step {steps[0]}): the teacher was confident of no joint there, so its term '
              'trained nothing; a lower config.adapt.confidence (mean teacher) or '
              'teacher_confidence (cross-schema) lets it count', flush=True)

  def fetch(self, step: int, metrics: Mapping[str, jax.Array],
            last_checkpoint: int | None) -> dict[str, float]:
    """``metrics`` of ``step`` as floats; a TrainingError when the loss or the parameters are not
    finite."""
    values = fetch_metrics(metrics)
    loss, norm = values['train/loss'], values['train/param_norm']
    if not (np.isfinite(loss) and np.isfinite(norm)):
      kept = ('no checkpoint was written' if last_checkpoint is None else
              f'the last checkpoint (step {last_checkpoint}) is from before it')
      window = (f'at step {step}' if step == self.checked + 1 else
                f'somewhere within steps {self.checked + 1}-{step}')
      raise TrainingError(f'non-finite loss {loss} or parameter norm {norm} at step {step}: it '
                          f'became nan or inf {window}; {kept}')
    self.checked = step
    self.last_loss = loss
    return values

  def log(self, step: int, values: Mapping[str, float]):
    now = time.perf_counter()
    self.log_steps += 1
    for key, value in values.items():
      if key.endswith('_confident') and value == 0:
        self.unconfident.setdefault(key, []).append(step)
    row = {**values, 'train/img_per_s': (step - self.logged) * self.global_batch
           / (now - self.t_log)}
    for k, v in row.items():
      self.writer.add_scalar(k, v, step)
    if self.primary:
      _append_row(self.path, {'step': step, **row})
      eta = (self.total_steps - step) * (now - self.t_start) / max(1, step - self.start)
      print(f'step {step}/{self.total_steps}  loss {values["train/loss"]:.7g}  '
            f'lr {values["train/lr"]:.2e}  {row["train/img_per_s"]:.1f} img/s  '
            f'ETA {eta / 60:.1f} min', flush=True)
    self.t_log, self.logged = now, step


def _evaluate_at(state, graphdef, config: ml_collections.ConfigDict, workdir: str, step: int,
                 writer, mesh: Mesh, *, global_batch: int) -> tuple[dict[str, Any], float | None]:
  """``(metrics, value)``: every process evaluates the (replicated) model, each batch split over
  ``mesh``, and process 0 appends the line of evals.jsonl; ``value`` is
  ``config.checkpoint.best_metric`` (None when unset or not among the metrics), the same on every
  process, since whether to save is decided collectively."""
  metrics = _evaluate(nnx.merge(graphdef, state['params'], state['batch_stats']), config,
                      workdir, step, writer, mesh)
  if jax.process_index() == 0:
    # One line per evaluation: the learning curve of the run, which TensorBoard also holds but
    # which scripts should not need TensorBoard to read.
    _append_row(os.path.join(workdir, 'evals.jsonl'),
                {'step': step, 'samples_seen': step * global_batch,
                 **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
  best_metric = config.checkpoint.get('best_metric') or ''
  if not best_metric:
    return metrics, None
  value = metrics.get(best_metric)
  if jax.process_index() == 0 and value is None:
    logging.warning('checkpoint.best_metric %r is not among the evaluation metrics %s',
                    best_metric, sorted(metrics))
  if jax.process_count() > 1:
    value = float(multihost_utils.broadcast_one_to_all(
        np.float64(np.nan if value is None else value)))
    value = None if np.isnan(value) else value
  return metrics, value


def _evaluate_or_save(ckpt: checkpoint.TrainCheckpoints, iterator, state, graphdef,
                      config: ml_collections.ConfigDict, workdir: str, step: int, writer,
                      mesh: Mesh, *, global_batch: int) -> tuple[dict[str, Any], float | None]:
  """:func:`_evaluate_at`; when the evaluation fails, ``step`` is saved before the error goes
  on, so that a broken evaluation set costs no training."""
  try:
    return _evaluate_at(state, graphdef, config, workdir, step, writer, mesh,
                        global_batch=global_batch)
  except Exception:
    if ckpt.latest_step != step:
      ckpt.save(step, state, iterator.get_state())
      ckpt.wait()
    raise


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from ``workdir`` when it holds checkpoints), evaluates, writes the run
  directory and returns the final metrics."""
  _check_test_seeds(config)
  config = resolve_evals(config)
  os.makedirs(workdir, exist_ok=True)
  mcfg = model_config_from_training(config)
  adaptation = _adaptation(config, mcfg)
  check_run_directory(workdir, mcfg)
  devices = jax.devices()
  mesh = Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P('data'))
  fit_batches_to_devices(config, len(devices))

  kd_weight = float(config.get('heatmap_distill_weight', 0.0))
  augment = transforms.AugmentConfig(**config.data.get('augment', {}))
  try:
    cached = feature_cache.resolve(
        config, augment, adaptation=adaptation, teacher=bool(kd_weight),
        knowledge_tokens=bool(mcfg.num_knowledge_tokens))
  except ValueError as e:
    raise TrainingError(str(e)) from None

  # Data: one stream per task, zipped into global batches; the host feeds its local share.
  iterator, sources = train_iterator(config, mcfg, indexed=cached)
  if cached:
    try:
      cached = feature_cache.fits(config, mcfg, sum(map(len, sources.values())),
                                  jax.local_devices())
    except ValueError as e:
      raise TrainingError(str(e)) from None

  # Durations are converted to steps once, here.
  epoch_task = config.get('epoch_task') or next(iter(config.tasks))
  steps_per_epoch = max(1, len(sources[epoch_task]) // config.tasks[epoch_task].batch_size)
  global_batch = sum(t.batch_size for t in config.tasks.values())
  total_steps = optim.steps_from(config, steps_per_epoch=steps_per_epoch, batch_size=global_batch)
  domain = None
  if isinstance(adaptation, adversarial.Adversarial):
    adaptation = dataclasses.replace(adaptation, total_steps=total_steps)
    domain = (nnx.state(adaptation.classifier(mcfg.width, config.seed), nnx.Param),
              adaptation.optimizer())

  model = _initial_model(config, mcfg, devices[0])
  # Heatmap distillation (stage 2) and the cross-schema teacher run in inference mode inside the
  # jitted step.
  teacher = _teacher(config.teacher, mcfg) if kd_weight and config.get('teacher') else None
  if kd_weight and teacher is None:
    raise TrainingError('config.heatmap_distill_weight > 0 needs config.teacher=RUN')
  if isinstance(adaptation, crossschema.CrossSchema):
    if teacher is not None:
      raise TrainingError('config.heatmap_distill_weight and config.adapt.method=crossschema '
                          'each need a teacher of their own: use one of them')
    teacher, _ = checkpoint.load_model(config.adapt.teacher)
  teacher_graphdef, teacher_state = (nnx.split(teacher) if teacher is not None
                                     else (None, None))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  tx, lr_schedule = optimizer_and_schedule(config, mcfg, params, total_steps=total_steps,
                                           steps_per_epoch=steps_per_epoch)
  state = jax.device_put(init_state(
      params, batch_stats, tx, config.seed,
      teacher=isinstance(adaptation, meanteacher.MeanTeacher), domain=domain), replicated)
  teacher_state = jax.device_put(teacher_state, replicated)
  if config.get('trainable', 'all') == 'tokens' and not mcfg.num_knowledge_tokens:
    raise TrainingError("config.trainable is 'tokens' but config.model.knowledge_tokens is 0")
  step_fn = make_train_step(config, mcfg, graphdef, tx, lr_schedule, sharding=replicated,
                            teacher_graphdef=teacher_graphdef, adaptation=adaptation,
                            labelled=labelled_tasks(config))

  # Run directory and resumption. Process 0 writes the files; every process takes part in
  # checkpointing (Orbax coordinates them).
  primary = jax.process_index() == 0
  ckpt = checkpoint.TrainCheckpoints(workdir, graphdef, keep=config.checkpoint.keep,
                                     best_metric=config.checkpoint.get('best_metric') or '')
  start = ckpt.latest_step
  if start is not None:
    # Before config.json is replaced: a refused resume leaves the run directory as it was.
    ckpt.check_resumable(start, state)
  if primary:
    write_run_description(workdir, config, mcfg)
  if start is not None:
    state, data_state = ckpt.restore(start, state)
    iterator.set_state(data_state)
    logging.info('resumed from step %d', start)
    print(f'resuming {workdir} from step {start}', flush=True)
  step = int(state['step'].addressable_data(0))
  if primary:
    _keep_rows_until(os.path.join(workdir, 'evals.jsonl'), step)
  cache = None
  if cached and step < total_steps:
    # From the restored weights: the frozen backbone is the source's, whatever the step.
    cache = feature_cache.build(
        nnx.merge(graphdef, state['params'], state['batch_stats']),
        {name: (sources[name], model_task(config, name),
                transforms.train_transforms(mcfg.task(model_task(config, name)).schema,
                                            mcfg.image_size, augment), t.batch_size)
         for name, t in config.tasks.items()},
        sharded=sharded, replicated=replicated)

  with _Stop() as stop, ckpt, _Progress(workdir, start=step, total_steps=total_steps,
                                        global_batch=global_batch) as progress:
    while step < total_steps:
      state, metrics = step_fn(state, to_device(next(iterator), sharded, images=not cached),
                               teacher_state, cache)
      step += 1
      signal_name = stop.agreed()
      # The last step is logged here, and evaluated and saved after the loop.
      log = step % config.log_every_steps == 0 or step == total_steps
      save = (step % config.checkpoint.every_steps == 0 and step < total_steps) or signal_name
      evaluate = (config.eval_every_steps and step % config.eval_every_steps == 0
                  and step < total_steps)
      if log or save or evaluate:
        values = progress.fetch(step, metrics, ckpt.latest_step)
        if log:
          progress.log(step, values)
      value = None
      if evaluate:
        _, value = _evaluate_or_save(ckpt, iterator, state, graphdef, config, workdir, step,
                                     progress.writer, mesh, global_batch=global_batch)
      if save or ckpt.is_new_best(step, value):
        ckpt.save(step, state, iterator.get_state(), value=value)
      if signal_name:
        ckpt.wait()
        print(f'{signal_name}: checkpoint written at step {step}; stopping', flush=True)
        raise SystemExit(143 if signal_name == 'SIGTERM' else 130)
    final, value = _evaluate_or_save(ckpt, iterator, state, graphdef, config, workdir, step,
                                     progress.writer, mesh, global_batch=global_batch)
    if ckpt.latest_step != step:
      ckpt.save(step, state, iterator.get_state(), value=value)
    final['step'] = step
    if progress.last_loss is not None:
      final['train/loss'] = progress.last_loss
  if primary:
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(final, f, indent=1)
  return final


def metric_summary(metrics: Mapping[str, Any]) -> str:
  keys = sorted(k for k in metrics if k.endswith('/AP') or k == 'mean/AP')
  return ', '.join(f'{k} {metrics[k]:.3f}' for k in keys)
