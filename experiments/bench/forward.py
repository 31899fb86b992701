"""Forward-pass throughput of the pose model (inference mode, jitted), in images per second.

    python experiments/bench/forward.py                      # ViTPose-B, classic decoder, batch 8
    python experiments/bench/forward.py --variant S --tasks 4 --decoder simple --dtype bfloat16

With ``--tasks N > 1`` the model is the factorized multi-task one and the batch is split evenly
across the first N default tasks; with N = 1 it is the dense single-task (COCO) model.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vitpose_jax import models

TASKS = {'coco': 'coco17', 'wholebody': 'coco_wholebody133', 'infant': 'infant_smil25',
         'wheelchair': 'wheelchair23'}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--variant', default='B', choices=list(models.VARIANTS))
  parser.add_argument('--decoder', default='classic', choices=list(models.DECODERS))
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=192)
  parser.add_argument('--tasks', type=int, default=1, choices=range(1, len(TASKS) + 1))
  parser.add_argument('--dtype', default='float32', choices=list(models.config.DTYPES))
  parser.add_argument('--iters', type=int, default=5)
  args = parser.parse_args()
  if args.batch % args.tasks:
    parser.error(f'--batch {args.batch} must split evenly over --tasks {args.tasks}')

  names = list(TASKS)[:args.tasks]
  config = models.model_config(
      args.variant, {t: TASKS[t] for t in names}, factorized=args.tasks > 1,
      decoder=args.decoder, image_size=(args.height, args.width), dtype=args.dtype)
  model = models.create_model(config)
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  share = args.batch // args.tasks
  batch = {t: jnp.asarray(rng.standard_normal((share, args.height, args.width, 3), np.float32))
           for t in names}

  @jax.jit
  def forward(state, batch):
    heatmaps, _ = nnx.merge(graphdef, state)(batch)
    return heatmaps

  t0 = time.perf_counter()
  jax.block_until_ready(forward(state, batch))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.iters):
    t0 = time.perf_counter()
    jax.block_until_ready(forward(state, batch))
    times.append(time.perf_counter() - t0)
  best, median = min(times), float(np.median(times))
  kind = f'factorized, {args.tasks} tasks' if args.tasks > 1 else 'dense'
  cpu = platform.processor() or platform.machine()
  print(f'ViTPose-{args.variant} ({kind}, {args.decoder} decoder, {args.dtype}), '
        f'batch {args.batch}, {args.height}x{args.width}')
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({cpu}, '
        f'{os.cpu_count()} CPUs visible), jax {jax.__version__}')
  print(f'params: {models.count_params(model) / 1e6:.1f} M; '
        f'first call (compile + run): {compile_s:.1f} s')
  print(f'forward: median {median * 1e3:.0f} ms/batch, best {best * 1e3:.0f} ms '
        f'over {args.iters} runs')
  print(f'throughput: {args.batch / median:.2f} img/s (median), '
        f'{args.batch / best:.2f} img/s (best)')

if __name__ == '__main__':
  main()
