r"""Learning curves: validation AP (ground-truth boxes, flip test) against samples seen, one curve
per training recipe ("arm"), so that every recipe choice of the shipped models cites a measurement.

Each arm is one training run of configs/single_task.py (a dense micro model on one synthetic
population) with a few overrides, evaluated every ``--eval-every`` samples on the val split at
seed 0 (the tuning split: test seeds >= 1000 are never used here). The runs read RUN/evals.jsonl,
the trainer's record of each evaluation. Writes RESULTS/results.md (AP at each evaluation, per
arm, with the command at the top), RESULTS/results.json and RESULTS/ap.png. Runs resume and
finished ones are reused, so an interrupted sweep continues where it stopped:

  python experiments/learning_curve.py --out experiments/results/learning_curve \
      --arms default,128x96,128x96-flip,128x96-flip-8k

Arms (``--arms``; see ARMS below): the current recipe (256x192 input, 800 training instances, the
full ViTPose augmentation), then one lever at a time on top of the previous arm: input 128x96,
flip as the only augmentation, 4k and then 8k training instances, a light augmentation (flip,
small scale and rotation), a larger learning rate, and a wider target.
"""

from __future__ import annotations

import argparse
import json
import os

import common

FLIP_ONLY = common.flip_only()
LIGHT = {'data.augment.half_body_prob': 0.0, 'data.augment.scale_factor': 0.25,
         'data.augment.rotation_factor': 20.0, 'data.augment.rotation_prob': 0.3,
         'data.augment.jitter_prob': 0.3, 'data.augment.jitter_factor': 0.2}
SMALL = {'model.image_size': (128, 96)}

# name: (training instances, overrides); one lever changes from the arm each builds on.
ARMS = {
    'default': (800, {}),
    '128x96': (800, SMALL),
    '128x96-flip': (800, {**SMALL, **FLIP_ONLY}),
    '128x96-flip-4k': (4000, {**SMALL, **FLIP_ONLY}),
    '128x96-flip-8k': (8000, {**SMALL, **FLIP_ONLY}),
    '128x96-light-8k': (8000, {**SMALL, **LIGHT}),
    '128x96-flip-8k-lr2e-3': (8000, {**SMALL, **FLIP_ONLY, 'optimizer.lr': 2e-3}),
    '128x96-flip-8k-sigma3': (8000, {**SMALL, **FLIP_ONLY, 'data.sigma': 3.0}),
    # The input size alone against 128x96-flip-8k: ViTPose-S at 256x192 learnt far faster than
    # micro at 128x96 on one accelerator (experiments/results/pretrain_accelerator).
    '256x192-flip-8k': (8000, FLIP_ONLY),
}


def curve(workdir: str, key: str) -> list[tuple[int, float]]:
  """(samples seen, metric) per evaluation of a run, the last record of each step winning (a
  resumed run may evaluate a step twice)."""
  path = os.path.join(workdir, 'evals.jsonl')
  if not os.path.exists(path):
    return []
  points = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if key in record:
        points[record['samples_seen']] = record[key]
  return sorted(points.items())


def line_plot(curves: dict[str, list[tuple[int, float]]], path: str, ylabel: str):
  """AP against samples seen, one line per arm (matplotlib, as common.bar_plot)."""
  fig = common.figure(width=7.0)
  axes = fig.subplots()
  for a, (arm, points) in enumerate(curves.items()):
    axes.plot([x for x, _ in points], [y for _, y in points], marker='o', markersize=3,
              label=arm, color=f'C{a}')
  axes.xaxis.set_major_formatter(lambda x, _: f'{x / 1000:g}k')
  axes.set_xlabel('samples seen')
  axes.set_ylabel(ylabel)
  axes.set_ylim(bottom=0)
  axes.grid(alpha=0.3)
  axes.legend(fontsize='small')
  fig.savefig(path, dpi=100)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'learning_curve'))
  parser.add_argument('--arms', default='default,128x96,128x96-flip,128x96-flip-4k,'
                      '128x96-flip-8k')
  parser.add_argument('--task', default='coco')
  parser.add_argument('--variant', default='micro')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--samples', type=int, default=64_000, help='samples seen per arm')
  parser.add_argument('--eval-every', type=int, default=16_000, help='samples between evals')
  parser.add_argument('--num-val', type=int, default=200)
  parser.add_argument('--num-train', type=int, default=0,
                      help="every arm's training instances instead of its own (smoke runs)")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--runs', default='', help='run directories (default OUT/runs)')
  args = parser.parse_args(argv)
  arms = args.arms.split(',')
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    parser.error(f'unknown arm(s) {unknown}; known: {", ".join(ARMS)}')
  if args.samples % args.batch or args.eval_every % args.batch:
    parser.error(f'--samples and --eval-every must be multiples of --batch {args.batch}')

  from vitpose_jax import train

  command = common.command_line(__file__)
  runs = args.runs or os.path.join(args.out, 'runs')
  steps, every = args.samples // args.batch, args.eval_every // args.batch
  # Arms may be run by several invocations (an expensive arm for fewer samples): the results
  # file accumulates them, each with the command that ran it.
  results_path = os.path.join(args.out, 'results.json')
  previous = {}
  if os.path.exists(results_path):
    with open(results_path) as f:
      previous = json.load(f).get('arms', {})
  for arm in arms:
    num_train, overrides = ARMS[arm]
    num_train = args.num_train or num_train
    data = common.synthetic_data([args.task], num_train, args.num_val)
    cfg = common.config('single_task', f'task={args.task},variant={args.variant},'
                        f'batch={args.batch}', {
                            **common.QUIET, **data, 'total_steps': steps,
                            'eval_every_steps': every, 'checkpoint.every_steps': every,
                            'seed': args.seed, **overrides})
    workdir = os.path.join(runs, f'{arm}-{args.samples // 1000}k')
    metrics = common.run(cfg, workdir, train.train_and_evaluate)
    previous[arm] = {'num_train': num_train, 'overrides': overrides, 'samples': args.samples,
                     'batch': args.batch, 'variant': args.variant, 'task': args.task,
                     'command': command, 'final': metrics.get(f'{args.task}/AP'),
                     'curve': curve(workdir, f'{args.task}/AP')}

  curves = {arm: [tuple(p) for p in r['curve']] for arm, r in previous.items()}
  samples = sorted({x for c in curves.values() for x, _ in c})
  rows = [[arm, str(r['num_train']), f"{r['samples'] / 1000:g}k"]
          + [next((f'{y:.3f}' for x, y in curves[arm] if x == s), '') for s in samples]
          for arm, r in previous.items()]
  preamble = (f'AP (val split, seed 0, {args.num_val} instances, ground-truth boxes, flip test) '
              f'against samples seen; {args.variant}, batch {args.batch}, a cosine schedule over '
              'each arm\'s samples, so an arm\'s last point is the end of its schedule and its '
              'earlier points are not shorter runs. Arms and their overrides:\n\n'
              + '\n'.join(f'- `{a}` ({r["task"]}): `{json.dumps(r["overrides"])}`, run by '
                          f'`{r["command"]}`' for a, r in previous.items()))
  text = common.write_results(
      args.out, command, preamble,
      ['arm', 'train instances', 'schedule'] + [f'{s / 1000:g}k' for s in samples],
      rows, {'arms': previous})
  line_plot(curves, os.path.join(args.out, 'ap.png'), 'AP (val, seed 0)')
  print(text)


if __name__ == '__main__':
  main()
