"""Steps/s of the demo config's training step with its metrics fetched every step vs every 20.

    python experiments/bench/metric_fetch.py                  # configs/multitask.py (the demo)
    python experiments/bench/metric_fetch.py --arg=runlocal   # its smoke-run shapes

Fetching the step's metrics to the host (``train.fetch_metrics``: a NaN check or a log line)
makes the host wait for the step to finish before it dispatches the next one; the trainer fetches
them only at log, checkpoint and evaluation steps (``config.log_every_steps``: 20 in the demo), so
the host can queue steps ahead of the device. This measures what that buys: the same jitted step
(``train.make_train_step``, state donated) on one batch held on the device, in blocks of
``--steps`` steps that fetch every step or every ``--every`` steps, alternating block by block
after a warm-up so that load from other processes hits both. It prints the median steps/s of
each and their ratio. The weights are a fresh initialisation (speed does not depend on them) and
the batch is random (no input pipeline: only the host-device wait is measured).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import configlib, models, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_batch(config, mcfg: models.ModelConfig, seed: int = 0) -> dict:
  """uint8 images (as the pipeline feeds them) and visible keypoints inside the crop, per task,
  at the config's batch sizes."""
  rng = np.random.default_rng(seed)
  h, w = mcfg.image_size
  batch = {}
  for name, t in config.tasks.items():
    n, k = t.batch_size, mcfg.task(name).num_keypoints
    xy = rng.uniform(0, 1, (n, k, 2)) * np.array([w - 1, h - 1])
    batch[name] = {'image': rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
                   'keypoints': xy.astype(np.float32),
                   'keypoint_weights': np.ones((n, k), np.float32)}
  return batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=os.path.join(ROOT, 'configs', 'multitask.py'))
  parser.add_argument('--arg', default='', help="the config's argument, e.g. runlocal")
  parser.add_argument('--every', type=int, default=20, help='the sparse fetch interval')
  parser.add_argument('--steps', type=int, default=60, help='steps per block (a multiple of '
                                                            '--every)')
  parser.add_argument('--rounds', type=int, default=3, help='blocks of each kind')
  parser.add_argument('--warmup', type=int, default=5, help='steps before the first block')
  args = parser.parse_args()
  if args.steps % args.every:
    parser.error(f'--steps {args.steps} is not a multiple of --every {args.every}')

  name = os.path.splitext(os.path.basename(args.config))[0]
  config = configlib.sibling_config(args.config, name).get_config(args.arg)
  devices = jax.devices()
  train.fit_batches_to_devices(config, len(devices))
  mcfg = train.model_config_from_training(config)
  mesh = Mesh(np.array(devices), ('data',))
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  graphdef, params, batch_stats = nnx.split(models.create_model(mcfg, seed=0), nnx.Param,
                                            nnx.BatchStat)
  # The schedule's length only sets lr values; any length past the warm-up will do.
  tx, schedule = train.optimizer_and_schedule(config, mcfg, params, total_steps=10**6,
                                              steps_per_epoch=1000)
  state = jax.device_put(train.init_state(params, batch_stats, tx, config.seed), replicated)
  step_fn = train.make_train_step(config, mcfg, graphdef, tx, schedule, sharding=replicated)
  batch = train.to_device(random_batch(config, mcfg), sharded)

  def block(state, steps: int, every: int):
    start = time.perf_counter()
    for i in range(1, steps + 1):
      state, metrics = step_fn(state, batch, None)
      if i % every == 0:
        train.fetch_metrics(metrics)
    return state, steps / (time.perf_counter() - start)

  state, _ = block(state, args.warmup, 1)
  rates = {1: [], args.every: []}
  for _ in range(args.rounds):
    for every, values in rates.items():
      state, rate = block(state, args.steps, every)
      values.append(rate)

  global_batch = sum(t.batch_size for t in config.tasks.values())
  print(f'{os.path.basename(args.config)}:{args.arg}  variant {mcfg.variant}, '
        f'{len(mcfg.tasks)} tasks, input {mcfg.image_size[0]}x{mcfg.image_size[1]}, '
        f'global batch {global_batch}, {len(devices)} x {devices[0].device_kind}')
  print(f'{args.rounds} alternating blocks of {args.steps} steps each, after {args.warmup} '
        'warm-up steps (median; all blocks in brackets)')
  medians = {}
  for every, values in rates.items():
    medians[every] = statistics.median(values)
    shown = ', '.join(f'{v:.2f}' for v in values)
    print(f'  metrics fetched every {every:>2} step(s): {medians[every]:8.2f} steps/s  [{shown}]')
  print(f'  ratio (every {args.every} / every 1): {medians[args.every] / medians[1]:.3f}')


if __name__ == '__main__':
  main()
