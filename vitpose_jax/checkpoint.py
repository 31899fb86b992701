"""Run directories: ``model.json`` plus Orbax checkpoints under ``checkpoints/`` (DESIGN §3.2).

Every checkpoint step holds a ``model`` item: the model's full NNX state (parameters and BatchNorm
statistics) as a pure dict. Trainers add their own items beside it in the same step (optimizer
state, data-iterator state); readers that only need the network restore ``model`` alone, so a
training run, a converted checkpoint and an exported one are all opened the same way.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx

from vitpose_jax import models, zoo

MODEL_ITEM = 'model'


class CheckpointError(ValueError):
  """A run directory cannot be read; the message names the directory and what is missing."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, **options) -> ocp.CheckpointManager:
  """The run's CheckpointManager; ``options`` go to ``ocp.CheckpointManagerOptions``."""
  return ocp.CheckpointManager(checkpoint_dir(workdir),
                               options=ocp.CheckpointManagerOptions(create=True, **options))


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
