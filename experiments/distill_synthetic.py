r"""Distillation on the synthetic benchmark: a larger tiny teacher into a smaller tiny student.

Trains the teacher once (configs/multitask.py), learns its knowledge tokens (configs/distill.py
stage=tokens), then trains the student with the same number of steps in every arm, for each seed:
student alone; + heatmap distillation; + token distillation; + both. Writes RESULTS/results.md
(mean ± std over seeds of each task's AP and the mean AP, with the command at the top),
RESULTS/results.json and RESULTS/ap.png (bars). Finished runs are reused, so an interrupted
experiment continues where it stopped.

  python experiments/distill_synthetic.py --out experiments/results/distill_synthetic

The defaults (micro teacher, nano student, four tasks) take about 45 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os

import common

ARMS = {
    # arm: (heatmap-distillation weight, use the teacher's tokens)
    'student alone': (0.0, False),
    '+ heatmap KD': (1.0, False),
    '+ token KD': (0.0, True),
    '+ both': (1.0, True),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, 'experiments', 'results',
                                                    'distill_synthetic'))
  parser.add_argument('--teacher', default='micro', help='teacher variant')
  parser.add_argument('--student', default='nano', help='student variant')
  parser.add_argument('--tasks', default='coco+wholebody+infant+wheelchair')
  parser.add_argument('--teacher-run', default='',
                      help='an existing multi-task run to distil instead of training a teacher')
  parser.add_argument('--teacher-steps', type=int, default=600)
  parser.add_argument('--token-steps', type=int, default=150)
  parser.add_argument('--student-steps', type=int, default=300)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num-train', type=int, default=800)
  parser.add_argument('--num-val', type=int, default=100)
  parser.add_argument('--tokens', type=int, default=1, help='knowledge tokens per task')
  args = parser.parse_args(argv)

  from vitpose_jax import distill, models, train

  command = common.command_line(__file__)
  runs = os.path.join(args.out, 'runs')
  tasks = args.tasks.split('+')
  data = common.synthetic_data(tasks, args.num_train, args.num_val)
  quiet = common.QUIET
  teacher = args.teacher_run or os.path.join(runs, 'teacher')
  if not args.teacher_run:
    common.run(common.config('multitask', f'variant={args.teacher},tasks={args.tasks},scratch',
                 {**data, **quiet, 'total_steps': args.teacher_steps}),
         teacher, train.train_and_evaluate)
  teacher_size = tuple(models.ModelConfig.load(teacher).image_size)
  tokens = os.path.join(runs, 'tokens')
  common.run(common.config('distill', f'stage=tokens,tokens={args.tokens},tasks={args.tasks}',
               {**data, **quiet, 'total_steps': args.token_steps, 'teacher': teacher}),
       tokens, distill.run)
  results = {arm: [] for arm in ARMS}
  for seed in range(args.seeds):
    for arm, (kd, use_tokens) in ARMS.items():
      slug = arm.strip('+ ').replace(' ', '_')
      # Heatmap distillation compares heatmaps cell by cell: the student takes the teacher's
      # input size.
      config = common.config('distill', f'stage=student,student={args.student},kd={kd},'
                       f'tasks={args.tasks}',
                       {**data, **quiet, 'total_steps': args.student_steps, 'seed': seed,
                        'teacher': teacher, 'tokens_from': tokens if use_tokens else '',
                        'model.image_size': teacher_size})
      metrics = common.run(config, os.path.join(runs, f'{slug}-seed{seed}'), distill.run)
      results[arm].append({t: metrics[f'{t}/AP'] for t in tasks} | {'mean': metrics['mean/AP']})

  table = {arm: {k: common.mean_std([r[k] for r in rs]) for k in tasks + ['mean']}
           for arm, rs in results.items()}
  teacher_cfg = models.ModelConfig.load(teacher)
  with open(os.path.join(teacher, 'metrics.json')) as f:
    teacher_metrics = json.load(f)
  preamble = (
      f'Teacher {teacher_cfg.variant} ({teacher_metrics["step"]} steps; mean AP '
      f'{teacher_metrics["mean/AP"]:.3f}), {args.tokens} knowledge token(s) per task '
      f'({args.token_steps} steps), student {args.student}, {args.student_steps} steps in every '
      f'arm, {args.seeds} seeds, synthetic data ({args.num_train} train / {args.num_val} val per '
      'task), ground-truth boxes. AP: mean ± std over seeds.')
  rows = [[arm] + [common.pm(*table[arm][k], args.seeds) for k in tasks + ['mean']] for arm in ARMS]
  text = common.write_results(args.out, command, preamble,
                              ['arm'] + [f'{t} AP' for t in tasks] + ['mean AP'], rows,
                              {'per_seed': results, 'table': table})
  common.bar_plot(table, tasks + ['mean'], os.path.join(args.out, 'ap.png'), 'AP')
  print(text)


if __name__ == '__main__':
  main()
