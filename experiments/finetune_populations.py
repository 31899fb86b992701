r"""New populations on the synthetic benchmark: adapt the shipped adult model (zoo:micro-adult,
coco + wholebody pretrained on synthetic adults) to infants and to wheelchair users, against
training the same network from scratch, with 10%, 30% and 100% of the target population's
training data.

Arms (``--arms``, by key; every arm trains one task, the target, for the same steps and batch
on the same data with flip as the only augmentation, on the pretrained model's geometry: micro,
128x96):
  scratch          random init, the from-scratch recipe (configs/multitask.py:scratch, lr 1e-3);
  finetune         configs/finetune.py from the shipped model (train=all, lr 1e-3, the main
                   command's adaptation recipe): the target's expert and decoder start from
                   coco's, and the keypoint channels of the joints it shares with coco17 by name
                   are copied (13 of infant_smil25's 25, 17 of wheelchair23's 23);
  finetune-fresh   the same, with every keypoint channel fresh (``init_shared_keypoints=False``):
                   what copying the shared channels brings.

Every run is scored once, after its last step, on the target's TEST split (synthetic seed
``--test-seed`` >= 1000, never used for training, selection or tuning): ground-truth boxes, flip
test. Writes RESULTS/results.md (test AP and PCK@0.2, mean ± std over seeds, the command at the
top), RESULTS/results.json and RESULTS/ap.png. Finished runs are reused, and the results of runs
made by earlier calls with other ``--arms`` or ``--fractions`` are kept in the table.

  python experiments/finetune_populations.py
  python experiments/finetune_populations.py --arms finetune-fresh --fractions 0.1

The defaults (2 targets x 3 fractions x 3 seeds x 2 arms, 200 steps x 32 samples each) take about
an hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os

import common

# key: label in the table
ARMS = {'scratch': 'scratch', 'finetune': 'fine-tune',
        'finetune-fresh': 'fine-tune, fresh keypoint layer'}


def arm_config(arm: str, target: str, args, data: dict, seed: int):
  from vitpose_jax import models

  base = {**common.QUIET, **data, **common.flip_only(), 'total_steps': args.steps, 'seed': seed,
          'evals': {}, 'checkpoint.best_metric': ''}
  if arm == 'scratch':
    source = models.ModelConfig.load(args.pretrained)
    return common.config('multitask', f'variant={args.variant},tasks={target},'
                         f'batch={args.batch},scratch',
                         {**base, 'model.image_size': tuple(source.image_size)})
  return common.config('finetune', f'tasks={target},from=coco,train=all,batch={args.batch},'
                       f'steps={args.steps}',
                       {**base, 'init_from': args.pretrained, 'optimizer.lr': args.finetune_lr,
                        'init_shared_keypoints': arm == 'finetune'})


def run_and_test(cfg, workdir: str, target: str, test: dict) -> dict:
  """Trains (unless finished before) and scores the last checkpoint on ``test``; the test
  metrics are kept in WORKDIR/test_metrics.json."""
  from vitpose_jax import train
  from vitpose_jax.evaluation import run_evaluators
  from vitpose_jax.predict import Predictor

  done = os.path.join(workdir, 'test_metrics.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  common.run(cfg, workdir, train.train_and_evaluate)
  metrics = run_evaluators({target: dict(type='keypoints', task=target, data=test)},
                           Predictor.from_run(workdir))
  metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
  with open(done, 'w') as f:
    json.dump(metrics, f, indent=1)
  return metrics


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'finetune_populations'))
  parser.add_argument('--runs', default='', help='run directories (default: OUT/runs)')
  parser.add_argument('--pretrained', default='zoo:micro-adult',
                      help='the adult model the fine-tune arms start from (a shipped model or '
                           'a run with a coco task)')
  parser.add_argument('--variant', default='micro', help='the scratch arm\'s network')
  parser.add_argument('--arms', default='scratch,finetune',
                      help=f'comma-separated, from: {", ".join(ARMS)}')
  parser.add_argument('--targets', default='infant+wheelchair')
  parser.add_argument('--fractions', default='0.1,0.3,1.0')
  parser.add_argument('--steps', type=int, default=200, help='steps of every run')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--finetune-lr', type=float, default=1e-3,
                      help='the main command\'s adaptation lr (configs/multitask.py)')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num-train', type=int, default=800, help='100%% of a population')
  parser.add_argument('--num-test', type=int, default=200)
  parser.add_argument('--test-seed', type=int, default=1000)
  args = parser.parse_args(argv)
  if args.test_seed < 1000:
    parser.error(f'--test-seed {args.test_seed}: test seeds are >= 1000')
  arms = [a.strip() for a in args.arms.split(',') if a.strip()]
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    parser.error(f'--arms: unknown {unknown}; known: {", ".join(ARMS)}')

  command = common.command_line(__file__)
  runs = args.runs or os.path.join(args.out, 'runs')
  fractions = [float(f) for f in args.fractions.split(',')]
  saved = os.path.join(args.out, 'results.json')
  results, commands = {}, []
  if os.path.exists(saved):
    with open(saved) as f:
      previous = json.load(f)
    commands = previous.get('commands', [])
    results = {g: {a: r for a, r in arms_of.items() if a in ARMS}
               for g, arms_of in previous.get('per_seed', {}).items()}
  commands = [c for c in commands if c != command] + [command]
  for target in args.targets.split('+'):
    population = common.population(target)
    test = dict(source='synthetic', population=population, num=args.num_test,
                seed=args.test_seed)
    for fraction in fractions:
      num = max(1, round(fraction * args.num_train))
      data = common.synthetic_data([target], num, 100)
      group = f'{target} {round(100 * fraction)}%'
      for arm in arms:
        scores = []
        for seed in range(args.seeds):
          slug = f'{target}-{round(100 * fraction)}pct-{arm}-seed{seed}'
          metrics = run_and_test(arm_config(arm, target, args, data, seed),
                                 os.path.join(runs, slug), target, test)
          scores.append({'AP': metrics[f'{target}/AP'], 'PCK@0.2': metrics[f'{target}/PCK@0.2']})
        results.setdefault(group, {})[arm] = scores

  groups = sorted(results, key=lambda g: (g.split()[0], float(g.split()[1].rstrip('%'))))
  present = [a for a in ARMS if any(a in results[g] for g in groups)]
  table = {arm: {g: {k: common.mean_std([r[k] for r in results[g][arm]])
                     for k in ('AP', 'PCK@0.2')}
                 for g in groups if arm in results[g]} for arm in present}

  def cell(arm, g, key):
    if g not in table[arm]:
      return '—'
    n = len(results[g][arm])
    return common.pm(*table[arm][g][key], n)

  def margin(g):
    """Fine-tune minus scratch AP, in units of the pooled std (twice it is the bar)."""
    if not all(a in table and g in table[a] for a in ('scratch', 'finetune')):
      return '—'
    (m1, s1), (m0, s0) = table['finetune'][g]['AP'], table['scratch'][g]['AP']
    pooled = ((s1 ** 2 + s0 ** 2) / 2) ** 0.5
    return f'{m1 - m0:+.4f} ({(m1 - m0) / pooled:+.1f} σ)' if pooled else f'{m1 - m0:+.4f}'

  percents = ', '.join(sorted({g.split()[1] for g in groups}, key=lambda p: float(p[:-1])))
  preamble = (
      f'Test AP and PCK@0.2 (synthetic seed {args.test_seed}, {args.num_test} instances of the '
      f'target population, ground-truth boxes, flip test) after {args.steps} steps × '
      f'{args.batch} samples of the target alone; target data: the first {percents} of '
      f'{args.num_train} synthetic training instances (seed 0); flip as the only augmentation; '
      f'mean ± std over {args.seeds} seeds (0..{args.seeds - 1}). scratch: random init, lr 1e-3; '
      f'fine-tune: from {args.pretrained} (train=all, lr {args.finetune_lr:g}), the new task '
      'from coco\'s expert and decoder with the shared joints\' keypoint channels copied; '
      'fine-tune, fresh keypoint layer: the same without the copy. "fine-tune − scratch": the '
      'difference of the means, and in units of the pooled std.')
  header = (['target, data'] + [f'{ARMS[a]} AP' for a in present] + ['fine-tune − scratch AP']
            + [f'{ARMS[a]} PCK@0.2' for a in present])
  rows = [[g] + [cell(a, g, 'AP') for a in present] + [margin(g)]
          + [cell(a, g, 'PCK@0.2') for a in present] for g in groups]
  text = common.write_results(args.out, '`, `'.join(commands), preamble, header, rows,
                              {'commands': commands, 'per_seed': results, 'table': table})
  common.bar_plot({ARMS[a]: {g: table[a][g]['AP'] for g in groups if g in table[a]}
                   for a in present}, groups,
                  os.path.join(args.out, 'ap.png'), 'test AP')
  print(text)


if __name__ == '__main__':
  main()
