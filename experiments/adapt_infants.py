r"""Adapting the shipped adult model to infants without infant labels (SHIFT-style mean teacher).

Source model: ``zoo:micro-adult`` (coco17 on synthetic adults). Target: synthetic infants labelled
in coco17 and drawn in the ``shifted`` style (lighting, camera, textures, sensor noise, blur),
whose training images reach the runs without labels (configs/adapt.py). Labelled source data
(``--source``): ``adult`` (the shipped model's own adults), or ``adult+infant`` (those and
synthetic infants in the plain style, labelled, as SyRIP's synthetic part: the shipped model
scores AP 0.0004 on plain infants, experiments/results/style_gap, so from adults alone every arm
starts from nothing). Arms (``--arms``, by key):

  source        with --source adult: the shipped model as it is (no training, one number);
                with adult+infant: fine-tuned on the labelled source with the teacher's weak
                augmentation (flip only; configs/adapt.py:method=source,weak);
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

ARMS = {'source': ('source only', 'method=source,weak'),
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


def batches(batch: int, arg: str) -> dict:
  """Overrides giving every stream of configs/adapt.py:ARG ``batch`` samples per step."""
  cfg = common.config_module('adapt').get_config(arg)
  return {f'tasks.{name}.batch_size': batch for name in cfg.tasks}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--source', default='adult+infant', choices=('adult', 'adult+infant'),
                      help='the labelled source data (configs/adapt.py:source=)')
  parser.add_argument('--out', default='',
                      help='default: experiments/results/adapt_infants/<source>')
  parser.add_argument('--runs', default='', help='run directories (default: OUT/runs)')
  parser.add_argument('--arms', default=','.join(ARMS), help=f'from: {", ".join(ARMS)}')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=16, help='samples per stream and step')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num-test', type=int, default=300)
  parser.add_argument('--test-seed', type=int, default=1000)
  parser.add_argument('--runlocal', action='store_true',
                      help="configs/adapt.py's smoke size (tiny data, 3 steps): tests only")
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
  out = args.out or os.path.join(common.ROOT, 'experiments', 'results', 'adapt_infants',
                                 args.source.replace('+', '_'))
  runs = args.runs or os.path.join(out, 'runs')
  test = dict(source='synthetic', population=adapt.TARGET_POPULATION, num=args.num_test,
              seed=args.test_seed, style=adapt.TARGET_STYLE)
  saved = os.path.join(out, 'results.json')
  results, commands = {}, []
  if os.path.exists(saved):
    with open(saved) as f:
      previous = json.load(f)
    results = {a: r for a, r in previous.get('per_seed', {}).items() if a in ARMS}
    commands = previous.get('commands', [previous.get('command', command)])
  commands = [c for c in commands if c != command] + [command]
  for arm in arms:
    scores = []
    for seed in range(args.seeds):
      if arm == 'source' and args.source == 'adult':
        metrics = test_metrics(adapt.SOURCE_MODEL, 'coco', test,
                               os.path.join(runs, 'source', 'test_metrics.json'))
        scores.append({'test AP': metrics['target/AP'], 'test PCK@0.2': metrics['target/PCK@0.2'],
                       'val AP': None})
        continue
      workdir = os.path.join(runs, f'{arm}-seed{seed}')
      arg = f'{ARMS[arm][1]},source={args.source}' + (',runlocal' if args.runlocal else '')
      cfg = common.config('adapt', f'{arg},steps={args.steps},seed={seed}',
                          {**common.QUIET, **batches(args.batch, arg), **extra})
      final = common.run(cfg, workdir, train.train_and_evaluate)
      metrics = test_metrics(workdir, 'coco', test, os.path.join(workdir, 'test_metrics.json'))
      scores.append({'test AP': metrics['target/AP'], 'test PCK@0.2': metrics['target/PCK@0.2'],
                     'val AP': final['target/AP']})
    results[arm] = scores

  present = [a for a in ARMS if a in results]
  keys = ('test AP', 'test PCK@0.2')
  table = {a: {k: common.mean_std([r[k] for r in results[a]]) for k in keys} for a in present}
  val = {a: common.mean_std([r['val AP'] for r in results[a]]) for a in present
         if results[a][0]['val AP'] is not None}

  def versus(arm, base, key):
    if arm not in table or base not in table or arm == base:
      return '—'
    (m1, s1), (m0, s0) = table[arm][key], table[base][key]
    pooled = ((s1 ** 2 + s0 ** 2) / 2) ** 0.5
    return f'{m1 - m0:+.4f}' + (f' ({(m1 - m0) / pooled:+.1f} σ)' if pooled else '')

  preamble = (
      f'Test AP and PCK@0.2 (synthetic {adapt.TARGET_POPULATION}, style {adapt.TARGET_STYLE}, '
      f'seed {args.test_seed}, {args.num_test} instances, ground-truth boxes, flip test) after '
      f'{args.steps} steps ({args.batch} samples of each labelled source stream and of the '
      f'target per step; labelled source: {args.source}; configs/adapt.py), mean ± '
      f'std over seeds 0..{args.seeds - 1}; val AP: the run\'s own evaluation on the target\'s '
      'val data (seed 0). "vs source" and "vs source + aug": difference of the means, and in '
      'units of the pooled std.')
  header = ['arm', 'test AP', 'AP vs source', 'AP vs source + aug', 'test PCK@0.2',
            'PCK vs source', 'PCK vs source + aug', 'val AP']
  rows = [[ARMS[a][0], common.pm(*table[a]['test AP'], len(results[a])),
           versus(a, 'source', 'test AP'), versus(a, 'source-aug', 'test AP'),
           common.pm(*table[a]['test PCK@0.2'], len(results[a])),
           versus(a, 'source', 'test PCK@0.2'), versus(a, 'source-aug', 'test PCK@0.2'),
           common.pm(*val[a], len(results[a])) if a in val else '—']
          for a in present]
  text = common.write_results(out, '`, `'.join(commands), preamble, header, rows,
                              {'commands': commands, 'per_seed': results, 'table': table, 'val': val,
                               'steps': args.steps, 'test': test, 'overrides': extra})
  common.bar_plot({ARMS[a][0]: {'test AP': table[a]['test AP'],
                                'test PCK@0.2': table[a]['test PCK@0.2']} for a in present},
                  ['test AP', 'test PCK@0.2'], os.path.join(out, 'ap.png'),
                  'infants, shifted style (test seed)')
  print(text)


if __name__ == '__main__':
  main()
