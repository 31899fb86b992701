"""python -m vitpose_jax.main --config=configs/multitask.py[:args] --workdir=DIR [--config.x=v]

Trains (resuming when DIR holds checkpoints), evaluates and writes the run directory. The logic
lives in :mod:`vitpose_jax.train`, importable from Colab. A fault in the inputs (config, data,
schema, run directory) ends in one line, ``error: ...``, with exit status 2.

Multi-host: ``--distributed`` calls ``jax.distributed.initialize()`` (cluster auto-detection), or
pass ``--coordinator_address``, ``--num_processes`` and ``--process_id`` explicitly.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'training config file', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'run directory (created; resumed when it exists)')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'initialise jax.distributed (multi-host)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process index')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
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

  config = _CONFIG.value
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
