r"""New populations on the synthetic benchmark: fine-tune a multi-task model pretrained on adults
(coco + wholebody) to infants and to wheelchair users, against training from scratch, with 10%,
30% and 100% of the target population's training data.

Both arms train the same network (the pretrained model's geometry, one expert and head for the
target task) for the same steps and batch on the same data: the fine-tune starts from the
pretrained backbone, and the new task from the coco expert and decoder (configs/finetune.py,
train=all); from scratch uses the multi-task recipe (configs/multitask.py) on the target alone.
Writes RESULTS/results.md (AP and PCK@0.2, mean ± std over seeds, the command at the top),
RESULTS/results.json and RESULTS/ap.png. Finished runs are reused.

  python experiments/finetune_populations.py --out experiments/results/finetune_populations

The defaults (micro, pretraining 500 steps, 150 steps per target run, 2 seeds) take about
45 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os

import common

ARMS = ('from scratch', 'pretrained + fine-tune')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'finetune_populations'))
  parser.add_argument('--variant', default='micro')
  parser.add_argument('--pretrain-tasks', default='coco+wholebody')
  parser.add_argument('--targets', default='infant+wheelchair')
  parser.add_argument('--fractions', default='0.1,0.3,1.0')
  parser.add_argument('--pretrain-steps', type=int, default=500)
  parser.add_argument('--pretrain-run', default='',
                      help='an existing multi-task run to start from instead of pretraining')
  parser.add_argument('--steps', type=int, default=150, help='steps of every target run')
  parser.add_argument('--batch', type=int, default=16, help='target batch')
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--num-train', type=int, default=800, help='100%% of a population')
  parser.add_argument('--num-val', type=int, default=100)
  args = parser.parse_args(argv)

  from vitpose_jax import train

  command = common.command_line(__file__)
  runs = os.path.join(args.out, 'runs')
  targets = args.targets.split('+')
  fractions = [float(f) for f in args.fractions.split(',')]
  pretrain_tasks = args.pretrain_tasks.split('+')
  pretrained = args.pretrain_run or os.path.join(runs, 'pretrain')
  if not args.pretrain_run:
    common.run(common.config(
        'multitask', f'variant={args.variant},tasks={args.pretrain_tasks}',
        {**common.QUIET, **common.synthetic_data(pretrain_tasks, args.num_train, args.num_val),
         'total_steps': args.pretrain_steps}), pretrained, train.train_and_evaluate)

  results = {}
  for target in targets:
    for fraction in fractions:
      num = max(1, round(fraction * args.num_train))
      data = common.synthetic_data([target], num, args.num_val)
      base = {**common.QUIET, **data, 'total_steps': args.steps}
      for seed in range(args.seeds):
        scratch = common.config('multitask', f'variant={args.variant},tasks={target},'
                                f'batch={args.batch}', {**base, 'seed': seed})
        tuned = common.config('finetune', f'tasks={target},from={pretrain_tasks[0]},train=all,'
                              f'batch={args.batch},steps={args.steps}',
                              {**base, 'seed': seed, 'init_from': pretrained})
        for arm, cfg in zip(ARMS, (scratch, tuned)):
          slug = f'{target}-{round(100 * fraction)}pct-{arm.split()[0]}-seed{seed}'
          metrics = common.run(cfg, os.path.join(runs, slug), train.train_and_evaluate)
          results.setdefault(f'{target} {round(100 * fraction)}%', {}).setdefault(
              arm, []).append({'AP': metrics[f'{target}/AP'],
                               'PCK@0.2': metrics[f'{target}/PCK@0.2']})

  groups = list(results)
  table = {arm: {g: {k: common.mean_std([r[k] for r in results[g][arm]]) for k in ('AP',
                                                                                    'PCK@0.2')}
                 for g in groups} for arm in ARMS}
  preamble = (
      f'{args.variant}; pretrained on {", ".join(pretrain_tasks)} for {args.pretrain_steps} '
      f'steps (synthetic adults); every target run {args.steps} steps × {args.batch} samples; '
      f'target data: the first 10/30/100% of {args.num_train} synthetic instances; '
      f'{args.num_val} val instances, ground-truth boxes, flip test; '
      + (f'{args.seeds} seeds, mean ± std.' if args.seeds > 1 else 'one seed.'))
  header = ['target, data'] + [f'{arm} AP' for arm in ARMS] + [f'{arm} PCK@0.2' for arm in ARMS]
  rows = [[g] + [common.pm(*table[arm][g]['AP'], args.seeds) for arm in ARMS]
          + [common.pm(*table[arm][g]['PCK@0.2'], args.seeds) for arm in ARMS] for g in groups]
  text = common.write_results(args.out, command, preamble, header, rows,
                              {'per_seed': results, 'table': table})
  common.bar_plot({arm: {g: table[arm][g]['PCK@0.2'] for g in groups} for arm in ARMS}, groups,
                  os.path.join(args.out, 'pck.png'), 'PCK@0.2')
  print(text)


if __name__ == '__main__':
  main()
