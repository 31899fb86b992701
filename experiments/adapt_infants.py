r"""Adapting the shipped adult model to infants: without infant labels (SHIFT-style mean teacher),
or with a few of them (FiDIP-style adversarial alignment, a cross-schema teacher: ``--labels``).

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

With ``--labels F`` (e.g. 0.1) the arms are instead the few-label ones (``FEW_LABEL_ARMS``), each
training an infant_smil25 head (``--schema``) from the shipped model's coco head, whose labelled
data is the fraction F of the shifted-style target's training images:

  finetune      fine-tuned on those labels alone (method=finetune);
  mix           + labelled plain-style synthetic infants, half of each labelled batch
                (method=finetune,synthetic);
  adversarial   + a domain classifier on pooled backbone tokens behind gradient reversal,
                synthetic against target images (the labelled and the unlabelled ones)
                (method=adversarial);
  crossschema   fine-tune + the shipped coco17 model teaching the 13 keypoints coco17 shares with
                infant_smil25, on the labelled and unlabelled target images (method=crossschema).

Every trained arm runs ``--steps`` steps per seed and is scored once, after its last step, on
the target's TEST data (synthetic seed ``--test-seed`` >= 1000, never used for training,
selection or tuning; ground-truth boxes, flip test); the run's own end-of-run evaluation on the
target's val data (seed 0), which tuning used, is reported beside it. Writes RESULTS/results.md,
RESULTS/results.json and RESULTS/ap.png. Finished runs are reused.

  python experiments/adapt_infants.py
  python experiments/adapt_infants.py --arms source,meanteacher --seeds 1 --steps 100
  python experiments/adapt_infants.py --labels 0.1
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
FEW_LABEL_ARMS = {'finetune': ('fine-tune', 'method=finetune'),
                  'mix': ('+ synthetic mixing', 'method=finetune,synthetic'),
                  'adversarial': ('+ mixing + adversarial', 'method=adversarial'),
                  'crossschema': ('cross-schema teacher', 'method=crossschema')}
# Each group's two baselines: the columns comparing every arm with them.
BASELINES = {'unlabelled': ('source', 'source-aug'), 'few': ('finetune', 'mix')}


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
  parser.add_argument('--arms', default='',
                      help=f'from: {", ".join(ARMS)} (default: all); with --labels, from: '
                      f'{", ".join(FEW_LABEL_ARMS)}')
  parser.add_argument('--labels', type=float, default=0.0,
                      help='the labelled fraction of the target images: runs the few-label arms')
  parser.add_argument('--schema', default='infant_smil25', choices=('infant_smil25', 'coco17'),
                      help='with --labels: the target schema (configs/adapt.py:schema=)')
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
  if not 0.0 <= args.labels < 1.0:
    parser.error(f'--labels {args.labels}: a fraction of the target images, in [0, 1)')
  few = args.labels > 0
  known = FEW_LABEL_ARMS if few else ARMS
  arms = [a.strip() for a in (args.arms or ','.join(known)).split(',') if a.strip()]
  unknown = [a for a in arms if a not in known]
  if unknown:
    parser.error(f'--arms: unknown {unknown}; known: {", ".join(known)}'
                 + ('' if few else ' (with --labels: ' + ', '.join(FEW_LABEL_ARMS) + ')'))
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
  group = f'labels{round(100 * args.labels)}' if few else args.source.replace('+', '_')
  if few and args.schema != 'infant_smil25':
    group += f'_{args.schema}'
  out = args.out or os.path.join(common.ROOT, 'experiments', 'results', 'adapt_infants', group)
  runs = args.runs or os.path.join(out, 'runs')
  population = adapt.POPULATIONS[args.schema] if few else adapt.TARGET_POPULATION
  head = 'target' if few else 'coco'
  names = {a: label for a, (label, _) in known.items()}
  test = dict(source='synthetic', population=population, num=args.num_test,
              seed=args.test_seed, style=adapt.TARGET_STYLE)
  saved = os.path.join(out, 'results.json')
  results, commands = {}, []
  if os.path.exists(saved):
    with open(saved) as f:
      previous = json.load(f)
    results = {a: r for a, r in previous.get('per_seed', {}).items() if a in known}
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
      local = ',runlocal' if args.runlocal else ''
      if few:
        cfg = common.config('adapt', f'{known[arm][1]},schema={args.schema},labels={args.labels},'
                            f'batch={args.batch},steps={args.steps},seed={seed}{local}',
                            {**common.QUIET, **extra})
      else:
        arg = f'{known[arm][1]},source={args.source}{local}'
        cfg = common.config('adapt', f'{arg},steps={args.steps},seed={seed}',
                            {**common.QUIET, **batches(args.batch, arg), **extra})
      final = common.run(cfg, workdir, train.train_and_evaluate)
      metrics = test_metrics(workdir, head, test, os.path.join(workdir, 'test_metrics.json'))
      scores.append({'test AP': metrics['target/AP'], 'test PCK@0.2': metrics['target/PCK@0.2'],
                     'val AP': final['target/AP']})
    results[arm] = scores

  present = [a for a in known if a in results]
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

  first, second = BASELINES['few' if few else 'unlabelled']
  setup = (f'labelled: {args.labels:g} of the target training images; an {args.schema} head '
           'started from the shipped coco head; per step '
           f'{args.batch} labelled samples (mixing arms: half of them synthetic) and '
           f'{args.batch} unlabelled target samples where the arm uses them' if few else
           f'{args.batch} samples of each labelled source stream and of the target per step; '
           f'labelled source: {args.source}')
  preamble = (
      f'Test AP and PCK@0.2 (synthetic {population}, style {adapt.TARGET_STYLE}, '
      f'seed {args.test_seed}, {args.num_test} instances, ground-truth boxes, flip test) after '
      f'{args.steps} steps ({setup}; configs/adapt.py), mean ± std over seeds '
      f'0..{args.seeds - 1}; val AP: the run\'s own evaluation on the target\'s val data (seed '
      f'0). "vs {names[first]}" and "vs {names[second]}": difference of the means, and in units '
      'of the pooled std.')
  header = ['arm', 'test AP', f'AP vs {names[first]}', f'AP vs {names[second]}', 'test PCK@0.2',
            f'PCK vs {names[first]}', f'PCK vs {names[second]}', 'val AP']
  rows = [[names[a], common.pm(*table[a]['test AP'], len(results[a])),
           versus(a, first, 'test AP'), versus(a, second, 'test AP'),
           common.pm(*table[a]['test PCK@0.2'], len(results[a])),
           versus(a, first, 'test PCK@0.2'), versus(a, second, 'test PCK@0.2'),
           common.pm(*val[a], len(results[a])) if a in val else '—']
          for a in present]
  text = common.write_results(out, '`, `'.join(commands), preamble, header, rows,
                              {'commands': commands, 'per_seed': results, 'table': table, 'val': val,
                               'steps': args.steps, 'test': test, 'overrides': extra,
                               **({'labels': args.labels, 'schema': args.schema} if few else {})})
  common.bar_plot({names[a]: {'test AP': table[a]['test AP'],
                                'test PCK@0.2': table[a]['test PCK@0.2']} for a in present},
                  ['test AP', 'test PCK@0.2'], os.path.join(out, 'ap.png'),
                  f'{population} infants, shifted style (test seed)')
  print(text)


if __name__ == '__main__':
  main()
