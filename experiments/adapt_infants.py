r"""Adapting the shipped adult model to infants without infant labels (SHIFT-style mean teacher).

Source: ``zoo:micro-adult`` (coco17 on synthetic adults). Target: synthetic infants labelled in
coco17 and drawn in the ``shifted`` style (lighting, camera, textures, sensor noise, blur), whose
training images reach the runs without labels (configs/adapt.py). Arms (``--arms``, by key):

  source        the shipped model as it is (no training; the same number for every seed);
  source-aug    fine-tuned on the labelled source alone with the strong augmentation
                (configs/adapt.py:method=source);
  meanteacher   + the target's unlabeled images: EMA teacher on weak views, consistency of the
                student's strong views on the teacher's confident joints (method=meanteacher);
  prior         + the pose prior on the student's soft-argmax keypoints (…,prior);
  silhouette    + the silhouette penalty (…,prior,silhouette).

Every trained arm runs ``--steps`` steps per seed and is scored once, after its last step, on
the target's TEST data (synthetic seed ``--test-seed`` >= 1000, never used for training,
selection or tuning; ground-truth boxes, flip test); the run's own end-of-run evaluation on the
target's val data (seed 0), which tuning used, is reported beside it. Writes RESULTS/results.md,
RESULTS/results.json and RESULTS/ap.png. Finished runs are reused.

  python experiments/adapt_infants.py
  python experiments/adapt_infants.py --arms source,meanteacher --seeds 1 --steps 100
"""

from __future__ import annotations

import argparse
import ast
import json
import os

import common

ARMS = {'source': ('source only', None),
        'source-aug': ('source + strong aug', 'method=source'),
        'meanteacher': ('mean teacher', 'method=meanteacher'),
        'prior': ('+ prior', 'method=meanteacher,prior'),
        'silhouette': ('+ prior + silhouette', 'method=meanteacher,prior,silhouette')}


def test_metrics(run: str, task: str, test: dict, path: str) -> dict:
  """The model of ``run`` (a run directory or ``zoo:`` name) scored on ``test``, its ``task``'s
  head; kept in ``path``."""
  from vitpose_jax.evaluation import run_evaluators
  from vitpose_jax.predict import Predictor

  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  metrics = run_evaluators({'target': dict(type='keypoints', task=task, data=test)},
                           Predictor.from_run(run))
  metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(metrics, f, indent=1)
  return metrics


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'adapt_infants'))
  parser.add_argument('--runs', default='', help='run directories (default: OUT/runs)')
  parser.add_argument('--arms', default=','.join(ARMS), help=f'from: {", ".join(ARMS)}')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num-test', type=int, default=300)
  parser.add_argument('--test-seed', type=int, default=1000)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='a config override for every trained arm (python literal value)')
  args = parser.parse_args(argv)
  if args.test_seed < 1000:
    parser.error(f'--test-seed {args.test_seed}: test seeds are >= 1000')
  arms = [a.strip() for a in args.arms.split(',') if a.strip()]
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    parser.error(f'--arms: unknown {unknown}; known: {", ".join(ARMS)}')
  extra = {}
  for item in args.set:
    key, _, value = item.partition('=')
    try:
      extra[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      extra[key] = value

  from vitpose_jax import train

  adapt = common.config_module('adapt')
  command = common.command_line(__file__)
  runs = args.runs or os.path.join(args.out, 'runs')
  test = dict(source='synthetic', population=adapt.TARGET_POPULATION, num=args.num_test,
              seed=args.test_seed, style=adapt.TARGET_STYLE)
  saved = os.path.join(args.out, 'results.json')
  results = {}
  if os.path.exists(saved):
    with open(saved) as f:
      results = {a: r for a, r in json.load(f).get('per_seed', {}).items() if a in ARMS}
  for arm in arms:
    label, arg = ARMS[arm]
    scores = []
    for seed in range(args.seeds):
      if arg is None:
        metrics = test_metrics(adapt.SOURCE_MODEL, 'coco', test,
                               os.path.join(runs, 'source', 'test_metrics.json'))
        scores.append({'test AP': metrics['target/AP'], 'val AP': None})
        continue
      workdir = os.path.join(runs, f'{arm}-seed{seed}')
      cfg = common.config('adapt', f'{arg},steps={args.steps},seed={seed}',
                          {**common.QUIET, **extra})
      final = common.run(cfg, workdir, train.train_and_evaluate)
      task = 'coco' if arm == 'source-aug' else 'target'
      metrics = test_metrics(workdir, task, test, os.path.join(workdir, 'test_metrics.json'))
      scores.append({'test AP': metrics['target/AP'], 'val AP': final['target/AP']})
    results[arm] = scores

  present = [a for a in ARMS if a in results]
  table = {a: common.mean_std([r['test AP'] for r in results[a]]) for a in present}
  val = {a: common.mean_std([r['val AP'] for r in results[a]]) for a in present
         if results[a][0]['val AP'] is not None}

  def versus(arm, base):
    if arm not in table or base not in table:
      return '—'
    (m1, s1), (m0, s0) = table[arm], table[base]
    pooled = ((s1 ** 2 + s0 ** 2) / 2) ** 0.5
    return f'{m1 - m0:+.4f}' + (f' ({(m1 - m0) / pooled:+.1f} σ)' if pooled else '')

  preamble = (
      f'Test AP (synthetic {adapt.TARGET_POPULATION}, style {adapt.TARGET_STYLE}, seed '
      f'{args.test_seed}, {args.num_test} instances, ground-truth boxes, flip test) after '
      f'{args.steps} steps (32 source + 32 target samples per step; configs/adapt.py), mean ± '
      f'std over seeds 0..{args.seeds - 1}; val AP: the run\'s own evaluation on the target\'s '
      'val data (seed 0). "vs source" and "vs source + aug": difference of the means, and in '
      'units of the pooled std.')
  header = ['arm', 'test AP', 'vs source', 'vs source + aug', 'val AP']
  rows = [[ARMS[a][0], common.pm(*table[a], len(results[a])), versus(a, 'source'),
           versus(a, 'source-aug'), common.pm(*val[a], len(results[a])) if a in val else '—']
          for a in present]
  text = common.write_results(args.out, command, preamble, header, rows,
                              {'per_seed': results, 'table': table, 'val': val,
                               'steps': args.steps, 'test': test, 'overrides': extra})
  common.bar_plot({ARMS[a][0]: {'infants, shifted': table[a]} for a in present},
                  ['infants, shifted'], os.path.join(args.out, 'ap.png'), 'test AP')
  print(text)


if __name__ == '__main__':
  main()
