r"""Knowledge factorization on the synthetic benchmark: at equal inference cost per task,

  factorized multi-task  one model, shared MLP parts + one expert and one head per task (ViTPose++)
  shared multi-task      one model, the same backbone with a plain MLP (no experts), one head each
  separate single-task   one dense model per task, trained on that task alone

Every arm has the same geometry for a given task at inference (a factorized task's MLP is a
dense MLP of the same width: C − P shared outputs ⊕ P expert outputs), and sees the same samples
of each task (same steps, same per-task batch share). Writes RESULTS/results.md (AP and PCK@0.2
per task, mean ± std over seeds, the parameters each arm needs to serve every task, the command
at the top), RESULTS/results.json and RESULTS/ap.png. Finished runs are reused.

  python experiments/factorization_ablation.py --out experiments/results/factorization_ablation

The defaults (micro; coco, infant, wheelchair; 300 steps; 3 seeds) take about an hour on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import os

import common

ARMS = ('factorized multi-task', 'shared multi-task', 'separate single-task')


def _params(cfg) -> int:
  from vitpose_jax import models, train

  return models.count_params(models.abstract_model(train.model_config_from_training(cfg)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'factorization_ablation'))
  parser.add_argument('--variant', default='micro')
  # Whole-body AP stays at 0 at this scale (issue 5's default run), so it would only add time.
  parser.add_argument('--tasks', default='coco+infant+wheelchair')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=8, help='per-task batch share')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num-train', type=int, default=800)
  parser.add_argument('--num-val', type=int, default=100)
  args = parser.parse_args(argv)

  from vitpose_jax import train

  command = common.command_line(__file__)
  tasks = args.tasks.split('+')
  runs = os.path.join(args.out, 'runs')
  data = common.synthetic_data(tasks, args.num_train, args.num_val)
  base = {**common.QUIET, 'total_steps': args.steps}

  def multitask(task_list, seed, dense):
    arg = f'variant={args.variant},tasks={"+".join(task_list)},batch={args.batch},scratch'
    overrides = {**base, 'seed': seed,
                 **{k: v for k, v in data.items() if k.split('.')[1] in task_list}}
    if dense:
      overrides['model.expert_dim'] = 0
    return common.config('multitask', arg, overrides)

  results = {arm: [] for arm in ARMS}
  params = {}
  for seed in range(args.seeds):
    per_arm = {}
    for arm, dense in (('factorized multi-task', False), ('shared multi-task', True)):
      cfg = multitask(tasks, seed, dense)
      params[arm] = _params(cfg)
      slug = arm.split()[0]
      per_arm[arm] = common.run(cfg, os.path.join(runs, f'{slug}-seed{seed}'),
                                train.train_and_evaluate)
    separate = {}
    params['separate single-task'] = 0
    for task in tasks:
      cfg = multitask([task], seed, dense=True)
      params['separate single-task'] += _params(cfg)
      separate.update(common.run(cfg, os.path.join(runs, f'separate-{task}-seed{seed}'),
                                 train.train_and_evaluate))
    per_arm['separate single-task'] = separate
    for arm, metrics in per_arm.items():
      row = {}
      for t in tasks:
        row[f'{t}/AP'] = metrics[f'{t}/AP']
        row[f'{t}/PCK@0.2'] = metrics[f'{t}/PCK@0.2']
      row['mean/AP'] = sum(metrics[f'{t}/AP'] for t in tasks) / len(tasks)
      results[arm].append(row)

  keys = list(results[ARMS[0]][0])
  table = {arm: {k: common.mean_std([r[k] for r in rows]) for k in keys}
           for arm, rows in results.items()}
  preamble = (
      f'{args.variant} backbone, tasks {", ".join(tasks)}; {args.steps} steps with {args.batch} '
      f'samples of each task per step in every arm; {args.seeds} seeds; synthetic data '
      f'({args.num_train} train / {args.num_val} val per task), ground-truth boxes, flip test. '
      'Mean ± std over seeds. Inference cost per task is the same in every arm; "params" is '
      'what serving every task takes.')
  header = (['arm'] + [f'{t} AP' for t in tasks] + ['mean AP']
            + [f'{t} PCK@0.2' for t in tasks] + ['params'])
  rows = [[arm] + [common.pm(*table[arm][f'{t}/AP'], args.seeds) for t in tasks]
          + [common.pm(*table[arm]['mean/AP'], args.seeds)]
          + [common.pm(*table[arm][f'{t}/PCK@0.2'], args.seeds) for t in tasks]
          + [f'{params[arm] / 1e6:.2f} M'] for arm in ARMS]
  text = common.write_results(args.out, command, preamble, header, rows,
                              {'per_seed': results, 'table': table, 'params': params})
  ap = {arm: {t: table[arm][f'{t}/AP'] for t in tasks} | {'mean': table[arm]['mean/AP']}
        for arm in ARMS}
  common.bar_plot(ap, tasks + ['mean'], os.path.join(args.out, 'ap.png'), 'AP')
  print(text)


if __name__ == '__main__':
  main()
