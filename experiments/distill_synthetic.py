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
import shlex
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {
    # arm: (heatmap-distillation weight, use the teacher's tokens)
    'student alone': (0.0, False),
    '+ heatmap KD': (1.0, False),
    '+ token KD': (0.0, True),
    '+ both': (1.0, True),
}


def _config(name: str, arg: str, overrides: dict):
  from vitpose_jax import configlib

  config = configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), name).get_config(arg)
  configlib.override(config, overrides)
  with config.unlocked():
    # Short runs (smoke tests of this script) keep a warm-up that fits.
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, config.total_steps // 5)
  return config


def _run(config, workdir: str, runner) -> dict:
  done = os.path.join(workdir, 'metrics.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  print(f'--- {workdir}', flush=True)
  return runner(config, workdir)


def _data(args) -> dict:
  out = {}
  from vitpose_jax import configlib

  tasks = configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), 'multitask').TASKS
  for task in args.tasks.split('+'):
    population = tasks[task][1]
    out[f'tasks.{task}.train'] = dict(source='synthetic', population=population,
                                      num=args.num_train, seed=0)
    val = dict(source='synthetic', population=population, num=args.num_val, seed=0)
    out[f'tasks.{task}.val'] = val
    out[f'evals.{task}.data'] = val
  return out


def _plot(table: dict, tasks: list[str], path: str):
  from PIL import Image, ImageDraw

  colours = [(120, 120, 120), (66, 133, 244), (219, 68, 55), (15, 157, 88)]
  groups = tasks + ['mean']
  bar, gap, height, top = 18, 30, 240, 30
  width = max(len(groups) * (len(ARMS) * bar + gap) + gap, gap + len(ARMS) * 130)
  image = Image.new('RGB', (width, height + top + 60), 'white')
  draw = ImageDraw.Draw(image)
  scale = max(max(m + s for m, s in table[arm].values()) for arm in ARMS) or 1.0
  for g, group in enumerate(groups):
    x0 = gap + g * (len(ARMS) * bar + gap)
    for a, arm in enumerate(ARMS):
      mean, std = table[arm][group]
      x = x0 + a * bar
      y = top + height - height * mean / scale
      draw.rectangle([x, y, x + bar - 3, top + height], fill=colours[a])
      err = height * std / scale
      draw.line([x + bar // 2 - 1, y - err, x + bar // 2 - 1, y + err], fill='black')
    draw.text((x0, top + height + 5), group, fill='black')
  for a, arm in enumerate(ARMS):
    draw.rectangle([gap + a * 130, 5, gap + a * 130 + 10, 15], fill=colours[a])
    draw.text((gap + a * 130 + 14, 4), arm, fill='black')
  draw.text((gap, top + height + 25), f'AP (top of the axis = {scale:.3f}); bars: mean, '
            'lines: ± std over seeds', fill='black')
  image.save(path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
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

  command = 'python ' + ' '.join(shlex.quote(a) for a in
                                 [os.path.relpath(__file__, ROOT)] + sys.argv[1:])
  runs = os.path.join(args.out, 'runs')
  data = _data(args)
  quiet = {'plots': 0, 'checkpoint.every_steps': 10**9, 'log_every_steps': 50}
  teacher = args.teacher_run or os.path.join(runs, 'teacher')
  if not args.teacher_run:
    _run(_config('multitask', f'variant={args.teacher},tasks={args.tasks}',
                 {**data, **quiet, 'total_steps': args.teacher_steps}),
         teacher, train.train_and_evaluate)
  tokens = os.path.join(runs, 'tokens')
  _run(_config('distill', f'stage=tokens,tokens={args.tokens},tasks={args.tasks}',
               {**data, **quiet, 'total_steps': args.token_steps, 'teacher': teacher}),
       tokens, distill.run)
  tasks = args.tasks.split('+')
  results = {arm: [] for arm in ARMS}
  for seed in range(args.seeds):
    for arm, (kd, use_tokens) in ARMS.items():
      slug = arm.strip('+ ').replace(' ', '_')
      config = _config('distill', f'stage=student,student={args.student},kd={kd},'
                       f'tasks={args.tasks}',
                       {**data, **quiet, 'total_steps': args.student_steps, 'seed': seed,
                        'teacher': teacher, 'tokens_from': tokens if use_tokens else ''})
      metrics = _run(config, os.path.join(runs, f'{slug}-seed{seed}'), distill.run)
      results[arm].append({t: metrics[f'{t}/AP'] for t in tasks} | {'mean': metrics['mean/AP']})

  table = {arm: {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs])))
                 for k in tasks + ['mean']} for arm, rs in results.items()}
  teacher_cfg = models.ModelConfig.load(teacher)
  with open(os.path.join(teacher, 'metrics.json')) as f:
    teacher_metrics = json.load(f)
  lines = [
      f'`{command}`', '',
      f'Teacher {teacher_cfg.variant} ({teacher_metrics["step"]} steps; mean AP '
      f'{teacher_metrics["mean/AP"]:.3f}), {args.tokens} knowledge token(s) per task '
      f'({args.token_steps} steps), student {args.student}, {args.student_steps} steps in every '
      f'arm, {args.seeds} seeds, synthetic data ({args.num_train} train / {args.num_val} val per '
      'task), ground-truth boxes. AP: mean ± std over seeds.', '',
      '| arm | ' + ' | '.join(f'{t} AP' for t in tasks) + ' | mean AP |',
      '|---|' + '---|' * (len(tasks) + 1),
  ]
  for arm in ARMS:
    cells = [f'{m:.4f} ± {s:.4f}' for m, s in (table[arm][k] for k in tasks + ['mean'])]
    lines.append(f'| {arm} | ' + ' | '.join(cells) + ' |')
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'command': command, 'per_seed': results, 'table': table}, f, indent=1)
  _plot(table, tasks, os.path.join(args.out, 'ap.png'))
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
