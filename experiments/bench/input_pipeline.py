"""Input-pipeline throughput: samples/s of the training pipeline with 0 and N worker processes.

    python experiments/bench/input_pipeline.py                     # adult, 256×192, 0 and 2 workers
    python experiments/bench/input_pipeline.py --population adult_wholebody --workers 0 1 2

Reads the synthetic dataset from the cache (generating and packing it on first use), applies the
full training transforms (flip, half-body, scale/rotation, UDP affine crop; crops stay uint8) and
batches. Every configuration runs in this one process, side by side; the first batches (worker
start-up) are excluded from the timing.
"""

from __future__ import annotations

import argparse
import os
import time

from vitpose_jax import skeletons
from vitpose_jax.data import pipeline, transforms

SCHEMAS = {'adult': 'coco17', 'adult_wholebody': 'coco_wholebody133', 'infant': 'infant_smil25',
           'wheelchair': 'wheelchair23'}


def measure(task: pipeline.TaskData, workers: int, batches: int, warmup: int) -> float:
  it = pipeline.make_iterator(pipeline.train_dataset([task], seed=0), num_workers=workers)
  try:
    for _ in range(warmup):
      next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * task.batch_size / (time.perf_counter() - t0)
  finally:
    if workers:
      it.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--population', default='adult', choices=list(SCHEMAS))
  parser.add_argument('--num', type=int, default=512, help='instances in the synthetic dataset')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--batches', type=int, default=30, help='timed batches per configuration')
  parser.add_argument('--warmup', type=int, default=5,
                      help='untimed batches first (worker start-up, filling the prefetch buffer)')
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  args = parser.parse_args()

  schema = skeletons.get(SCHEMAS[args.population])
  spec = dict(source='synthetic', population=args.population, num=args.num)
  source = pipeline.open_source(spec, schema)
  task = pipeline.TaskData(args.population, schema, source, args.batch,
                           tuple(transforms.train_transforms(schema, (256, 192))))
  print(f'{args.population} ({schema.name}, K={schema.num_keypoints}), {len(source)} instances, '
        f'256x192, batch {args.batch}, {os.cpu_count()} CPUs')
  rates = {w: measure(task, w, args.batches, args.warmup) for w in args.workers}
  base = rates[args.workers[0]]
  for w, rate in rates.items():
    print(f'workers={w}: {rate:7.1f} samples/s  ({rate / base:.2f}x workers={args.workers[0]})')


if __name__ == '__main__':
  main()
