"""Run directories: ``model.json`` plus Orbax checkpoints under ``checkpoints/`` (docs/design.md).

Every checkpoint step holds a ``model`` item: the model's full NNX state (parameters and BatchNorm
statistics) as a pure dict. A training run adds its own items beside it in the same step
(:class:`TrainCheckpoints`: optimizer state, step and rng, data-iterator state); readers that only
need the network restore ``model`` alone, so a training run, a converted checkpoint and an
exported one are all opened the same way.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as policies

from vitpose_jax import models, zoo

MODEL_ITEM = 'model'
# The items a training run adds to each step.
OPT_STATE_ITEM = 'opt_state'
TRAIN_ITEM = 'train'  # step counter and rng key data
DATA_ITEM = 'data'  # the grain iterator's state, JSON
# A mean-teacher run's EMA teacher (parameters and BatchNorm statistics, as pure dicts).
TEACHER_ITEM = 'teacher'
DOMAIN_ITEM = 'domain'
# The train state's optional items, each with the adaptation method whose runs have it.
_OPTIONAL_ITEMS = {TEACHER_ITEM: 'meanteacher', DOMAIN_ITEM: 'adversarial'}


class CheckpointError(ValueError):
  """A run directory cannot be read; the message names the directory and what is missing."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, **options) -> ocp.CheckpointManager:
  """The run's CheckpointManager; ``options`` go to ``ocp.CheckpointManagerOptions``."""
  return ocp.CheckpointManager(checkpoint_dir(workdir),
                               options=ocp.CheckpointManagerOptions(create=True, **options))


def _rank(record: dict) -> tuple:
  """Orders the records :class:`TrainCheckpoints` saves with each step: evaluated steps by value
  (the earlier first among equal values, as best.json names the first), all above the steps saved
  without an evaluation, which rank by step."""
  if 'value' in record:
    return (1, record['value'], -record['step'])
  return (0, record['step'], 0)


class TrainCheckpoints:
  """A training run's checkpoints: saves and restores the train state (``model``, ``opt_state``,
  ``train`` = step and rng, ``data`` = the iterator state) and keeps, with Orbax's preservation
  policies, the last ``keep`` steps (every one when 0) plus the best by ``best_metric`` (higher is
  better; '' for none). Each step saved while ``best_metric`` is set records ``{'step'}``, plus
  ``'metric'`` and ``'value'`` when it was evaluated, as Orbax metrics; the best record is also
  written to best.json (:func:`read_best`, ``--step best``) by process 0. Every process calls
  every method: Orbax coordinates the processes' writes. A context manager: leaving it waits
  for the last save.

  ``state`` is the trainer's dict: ``params`` and ``batch_stats`` (NNX states of ``graphdef``),
  ``opt_state``, ``step`` (int32 scalar) and ``rng`` (key data); a mean-teacher run adds
  ``teacher`` (``{'params', 'batch_stats'}`` of the same graph), saved as the ``teacher`` item;
  an adversarial run adds ``domain`` (the domain classifier's ``{'params', 'opt_state'}``),
  saved as the ``domain`` item.
  """

  def __init__(self, workdir: str, graphdef, *, keep: int, best_metric: str = ''):
    self.workdir = workdir
    self.graphdef = graphdef
    self.best_metric = best_metric
    latest = policies.LatestN(n=keep or None)
    if best_metric:
      # Orbax's own best_fn would keep the best `keep` instead of the last ones; BestN next to
      # LatestN keeps both. BestN keeps every step that has no record, so every step gets one
      # (steps of runs written before the records existed are all kept: no best is lost). Orbax
      # writes the records only when best_fn is set.
      policy = policies.AnyPreservationPolicy(
          [latest, policies.BestN(get_metric_fn=_rank, reverse=False, n=1)])
      self.mngr = manager(workdir, best_fn=_rank, best_mode='max', preservation_policy=policy)
    else:
      self.mngr = manager(workdir, preservation_policy=latest)
    self.best = read_best(workdir)

  @property
  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def is_new_best(self, step: int, value: float | None) -> bool:
    """Whether ``value`` of ``best_metric`` at ``step`` beats the best so far."""
    if not self.best_metric or value is None:
      return False
    record = {'value': value, 'step': step}
    return self.best is None or _rank(record) > _rank(self.best)

  def save(self, step: int, state: dict[str, Any], data_state: dict, *,
           value: float | None = None):
    """Saves ``state`` and ``data_state`` as ``step`` (asynchronously), with ``value``, the
    step's ``best_metric`` when it was evaluated; updates best.json when it is a new best."""
    net = nnx.merge(self.graphdef, state['params'], state['batch_stats'])
    record = None
    if self.best_metric:
      record = {'step': step}
      if value is not None:
        record.update(metric=self.best_metric, value=float(value))
    new_best = self.is_new_best(step, value)
    items = {
        MODEL_ITEM: ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(net))),
        OPT_STATE_ITEM: ocp.args.StandardSave(state['opt_state']),
        TRAIN_ITEM: ocp.args.StandardSave({'step': state['step'], 'rng': state['rng']}),
        DATA_ITEM: ocp.args.JsonSave(data_state),
    }
    if 'teacher' in state:
      items[TEACHER_ITEM] = ocp.args.StandardSave(
          {k: nnx.to_pure_dict(v) for k, v in state['teacher'].items()})
    if 'domain' in state:
      items[DOMAIN_ITEM] = ocp.args.StandardSave(
          {'params': nnx.to_pure_dict(state['domain']['params']),
           'opt_state': state['domain']['opt_state']})
    self.mngr.save(step, args=ocp.args.Composite(**items), metrics=record, force=True)
    if new_best:
      self.best = record
      # best.json names only a step whose files are complete.
      self.wait()
      if jax.process_index() == 0:
        write_best(self.workdir, record)

  def check_resumable(self, step: int, state: dict[str, Any]):
    """CheckpointError (one line) when ``step`` lacks an item of ``state``: a run without that
    adaptation method wrote it, so this config cannot resume it."""
    step_dir = os.path.join(checkpoint_dir(self.workdir), str(step))
    for item, method in _OPTIONAL_ITEMS.items():
      if item in state and not os.path.isdir(os.path.join(step_dir, item)):
        raise CheckpointError(
            f'{step_dir} has no {item!r} item: a run without config.adapt.method={method} wrote '
            'it; resume it with the config that wrote it, or train this one in a new --workdir')

  def restore(self, step: int, state: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """``(state, data_state)`` at ``step``, each array with the sharding of its counterpart in
    ``state`` (the freshly initialised train state, which gives the structure)."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    net = nnx.merge(self.graphdef, state['params'], state['batch_stats'])
    model_like = nnx.to_pure_dict(nnx.state(net))
    sharding = state['step'].sharding
    items = {
        MODEL_ITEM: ocp.args.StandardRestore(jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), model_like)),
        OPT_STATE_ITEM: ocp.args.StandardRestore(abstract['opt_state']),
        TRAIN_ITEM: ocp.args.StandardRestore({'step': abstract['step'], 'rng': abstract['rng']}),
        DATA_ITEM: ocp.args.JsonRestore(),
    }
    if 'teacher' in state:
      items[TEACHER_ITEM] = ocp.args.StandardRestore(
          {k: nnx.to_pure_dict(v) for k, v in abstract['teacher'].items()})
    if 'domain' in state:
      items[DOMAIN_ITEM] = ocp.args.StandardRestore(
          {'params': nnx.to_pure_dict(abstract['domain']['params']),
           'opt_state': abstract['domain']['opt_state']})
    restored = self.mngr.restore(step, args=ocp.args.Composite(**items))
    net_state = nnx.state(net)
    nnx.replace_by_pure_dict(net_state, restored[MODEL_ITEM])
    nnx.update(net, net_state)
    _, params, batch_stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    new_state = {'params': params, 'batch_stats': batch_stats,
                 'opt_state': restored[OPT_STATE_ITEM], 'step': restored[TRAIN_ITEM]['step'],
                 'rng': restored[TRAIN_ITEM]['rng']}
    if 'teacher' in state:
      teacher = jax.tree.map(lambda x: x, state['teacher'])
      for k, v in teacher.items():
        nnx.replace_by_pure_dict(v, restored[TEACHER_ITEM][k])
      new_state['teacher'] = teacher
    if 'domain' in state:
      params = jax.tree.map(lambda x: x, state['domain']['params'])
      nnx.replace_by_pure_dict(params, restored[DOMAIN_ITEM]['params'])
      new_state['domain'] = {'params': params, 'opt_state': restored[DOMAIN_ITEM]['opt_state']}
    return new_state, restored[DATA_ITEM]

  def wait(self):
    """Blocks until the last save is complete on disk."""
    self.mngr.wait_until_finished()

  def close(self):
    """Waits for the last save and releases the manager."""
    self.mngr.close()

  def __enter__(self) -> TrainCheckpoints:
    return self

  def __exit__(self, *exc):
    self.close()


def best_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'best.json')


def read_best(workdir: str) -> dict | None:
  """The run's best evaluation so far, ``{'metric', 'value', 'step'}``, or None."""
  try:
    with open(best_path(workdir)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def write_best(workdir: str, best: dict):
  tmp = best_path(workdir) + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(best, f, indent=1)
  os.replace(tmp, best_path(workdir))


def parse_step(value: str) -> int | str:
  """A ``--step`` argument: a checkpoint step or ``best``."""
  if value == 'best':
    return value
  try:
    return int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'--step must be a checkpoint step or "best", got {value!r}') from None


def save_model(workdir: str, model: models.VitPose, step: int = 0):
  """Writes ``model.json`` and a checkpoint holding only the model (e.g. a converted one)."""
  os.makedirs(workdir, exist_ok=True)
  model.config.save(os.path.join(workdir, 'model.json'))
  with manager(workdir) as mngr:
    state = nnx.to_pure_dict(nnx.state(model))
    mngr.save(step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(state)}))
    mngr.wait_until_finished()


def load_model(workdir: str, *, step: int | str | None = None) -> tuple[models.VitPose, int]:
  """The model of a run directory (or ``zoo:<name>``, a shipped model) at ``step`` (default: the
  latest; ``'best'``: the checkpoint with the best ``config.checkpoint.best_metric``), and that
  step."""
  workdir = zoo.resolve(workdir)
  config = models.ModelConfig.load(workdir)
  if step == 'best':
    best = read_best(workdir)
    if best is None:
      raise CheckpointError(f'{workdir}: no best.json (written when a run evaluates with '
                            'config.checkpoint.best_metric set)')
    step = best['step']
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise CheckpointError(f'{workdir}: no checkpoints/ folder (a run directory holds model.json '
                          'and checkpoints/)')
  model = models.abstract_model(config)
  with manager(workdir) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
      raise CheckpointError(f'{workdir}: no checkpoint at step {step} '
                            f'(steps: {sorted(mngr.all_steps())})')
    # An explicit target device: a checkpoint written by a multi-process run records a topology
    # this process may not have.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            nnx.to_pure_dict(nnx.state(model)))
    restored = mngr.restore(step, args=ocp.args.Composite(
        **{MODEL_ITEM: ocp.args.StandardRestore(abstract)}))[MODEL_ITEM]
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(model, state)
  return model, step
