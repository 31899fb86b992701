"""Wall time of an evaluation on 1 and on 8 devices, the first of a run and a repeated one.

    python experiments/bench/evaluation.py                  # zoo:micro-adult, 400 instances
    python experiments/bench/evaluation.py --model RUN --task coco --num 400 --devices 1,8

Each device count runs in its own process, with ``XLA_FLAGS=--xla_force_host_platform_device_count``
set before JAX starts (on a CPU host these are fake devices sharing the host's cores; on an
accelerator host the flag does nothing and the real devices are used). Every evaluation builds a
new :class:`vitpose_jax.predict.Predictor`, as the trainer does at each evaluation step:

- first: the first evaluation of the process (compiles the predictor's programs),
- repeated: the same evaluation again (the compiled programs are reused),
- recompiled: again after ``jax.clear_caches()``, i.e. what every evaluation cost when each new
  Predictor compiled afresh.

The synthetic data is generated once, before any timing. Results: ``--out``/results.json and a
table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

DEVICE_FLAG = '--xla_force_host_platform_device_count'


def worker(args) -> dict:
  import jax
  import numpy as np
  from jax.sharding import Mesh

  from vitpose_jax.evaluation import run_evaluators
  from vitpose_jax.predict import Predictor

  devices = jax.devices()[:args.worker]
  if len(devices) != args.worker:
    raise SystemExit(f'asked for {args.worker} devices, JAX has {len(jax.devices())}')
  mesh = Mesh(np.array(devices), ('data',))
  model = Predictor.from_run(args.model, mesh=mesh).model
  evals = {args.task: dict(type='keypoints', task=args.task, batch_size=args.batch,
                           data=dict(source='synthetic', population=args.population,
                                     num=args.num, seed=0))}
  out = {'devices': len(devices), 'device_kind': devices[0].device_kind,
         'backend': jax.default_backend()}
  for label in ('first', 'repeated', 'recompiled'):
    if label == 'recompiled':
      jax.clear_caches()
    start = time.perf_counter()
    metrics = run_evaluators(evals, Predictor(model, mesh=mesh), cache_dir=args.cache)
    out[f'{label}_s'] = round(time.perf_counter() - start, 3)
    out[f'{label}_AP'] = metrics[f'{args.task}/AP']
    out['instances'] = metrics[f'{args.task}/instances']
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='zoo:micro-adult', help='run directory or zoo:<name>')
  parser.add_argument('--task', default='coco')
  parser.add_argument('--population', default='adult', help='synthetic population to evaluate on')
  parser.add_argument('--num', type=int, default=400, help='instances (default 400)')
  parser.add_argument('--batch', type=int, default=32, help='crops per global batch')
  parser.add_argument('--devices', default='1,8', help='device counts, comma-separated')
  parser.add_argument('--cache', help='synthetic data cache (default: a temporary folder)')
  parser.add_argument('--out', help='folder for results.json')
  parser.add_argument('--worker', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return 0

  from vitpose_jax import synthetic

  cache = args.cache or tempfile.mkdtemp(prefix='bench_evaluation_')
  synthetic.dataset(args.population, 'val', args.num, 0, cache)
  rows = []
  for count in [int(c) for c in args.devices.split(',')]:
    env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {DEVICE_FLAG}={count}'}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--worker', str(count), '--model', args.model,
         '--task', args.task, '--population', args.population, '--num', str(args.num),
         '--batch', str(args.batch), '--cache', cache],
        env=env, capture_output=True, text=True)
    if done.returncode:
      print(done.stderr[-3000:], file=sys.stderr)
      return done.returncode
    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
  print(f'evaluation of {rows[0]["instances"]} instances ({args.model}, task {args.task}, '
        f'batch {args.batch}, flip test), {rows[0]["backend"]} ({rows[0]["device_kind"]}), '
        f'{os.cpu_count()} host cores')
  print('| devices | first (s) | repeated (s) | recompiled (s) | AP |')
  print('|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["devices"]} | {r["first_s"]:.2f} | {r["repeated_s"]:.2f} | '
          f'{r["recompiled_s"]:.2f} | {r["first_AP"]:.4f} |')
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump({'model': args.model, 'task': args.task, 'num': args.num, 'batch': args.batch,
                 'host_cores': os.cpu_count(), 'runs': rows}, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
