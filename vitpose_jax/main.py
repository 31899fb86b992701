"""python -m vitpose_jax.main --config=configs/multitask.py[:args] --workdir=DIR [--config.x=v]

Trains (resuming when DIR holds checkpoints), evaluates and writes the run directory. The logic
lives in :mod:`vitpose_jax.train`, importable from Colab. A fault in the inputs (config, data,
schema, run directory) ends in one line, ``error: ...``, with exit status 2.

A duration given on the command line in another unit than the config file's
(``--config.total_epochs=2`` where the file sets ``total_steps``) replaces the file's; giving two
units of one duration is an error.

Multi-host: ``--distributed`` calls ``jax.distributed.initialize()`` (cluster auto-detection), or
pass ``--coordinator_address``, ``--num_processes`` and ``--process_id`` explicitly.
"""

from __future__ import annotations

import json
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from vitpose_jax import configlib


def define_config_flag(flag_values: flags.FlagValues = flags.FLAGS,
                       sys_argv: list[str] | None = None) -> flags.FlagHolder:
  """Defines ``--config`` (a config file, locked, ``--config.x=v`` overrides) on ``flag_values``;
  the overrides are read from ``sys_argv`` (default: ``sys.argv``)."""
  return config_flags.DEFINE_config_file('config', None, 'training config file',
                                         flag_values=flag_values, lock_config=True,
                                         sys_argv=sys_argv)


def resolved_config(config_flag: flags.Flag) -> ml_collections.ConfigDict:
  """The config of a parsed ``--config`` flag, where a duration unit set on the command line
  replaces the config file's own (:func:`vitpose_jax.configlib.prefer_given_units`).

  Raises:
    ValueError: the command line sets two units of one duration.
  """
  return configlib.prefer_given_units(config_flag.value,
                                      config_flags.get_override_values(config_flag))


_CONFIG = define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'run directory (created; resumed when it exists)')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'initialise jax.distributed (multi-host)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process index')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  try:
    config = resolved_config(flags.FLAGS[_CONFIG.name])
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  import jax
  from absl import logging

  if not flags.FLAGS['verbosity'].present:
    # Orbax and TFDS log every step at INFO; the trainer prints its own progress.
    logging.set_verbosity(logging.WARNING)

  if _DISTRIBUTED.value or _COORDINATOR.value:
    # Cross-process collectives on CPU need gloo (GPU and TPU bring their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  from vitpose_jax import checkpoint, distill, models, skeletons, train
  from vitpose_jax.data.coco import DataError

  try:
    if config.get('trainer', 'train') == 'distill':
      metrics = distill.run(config, _WORKDIR.value)
    else:
      metrics = train.train_and_evaluate(config, _WORKDIR.value)
  except (train.TrainingError, models.ModelConfigError, checkpoint.CheckpointError, DataError,
          skeletons.SchemaError) as e:
    # These messages name the file and field at fault; a traceback would bury them.
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  if jax.process_index() == 0:
    print('final:', train.metric_summary(metrics))
    print(json.dumps(metrics))


if __name__ == '__main__':
  app.run(main)
