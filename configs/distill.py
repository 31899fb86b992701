r"""Knowledge-token and heatmap distillation of a large model into a small one (docs/design.md).

Stage 1 learns n knowledge tokens per task on a frozen teacher (every weight and BatchNorm
statistic unchanged, inference mode, ground-truth loss):

  python -m vitpose_jax.main --config=configs/distill.py:stage=tokens \
      --config.teacher=/tmp/vitpose_multitask --workdir=/tmp/vitpose_tokens

Stage 2 trains a smaller student with the teacher's frozen tokens (through a linear bridge) and
heatmap distillation (MSE to the teacher's heatmaps, weight `kd`) on top of the ground truth:

  python -m vitpose_jax.main --config=configs/distill.py:stage=student,student=nano \
      --config.teacher=/tmp/vitpose_multitask --config.tokens_from=/tmp/vitpose_tokens \
      --workdir=/tmp/vitpose_student

Leave `--config.tokens_from` empty for heatmap distillation alone, or pass `kd=0` for token
distillation alone. Smoke runs (< 2 minutes), which train their own tiny teacher (and tokens):

  python -m vitpose_jax.main --config=configs/distill.py:stage=tokens,runlocal --workdir=/tmp/t
  python -m vitpose_jax.main --config=configs/distill.py:stage=student,runlocal --workdir=/tmp/s

Arguments: `stage=tokens|student`, `tokens=` (n per task, stage 1), `student=` (variant, stage 2),
`kd=` (heatmap-distillation weight, stage 2), `tasks=a+b` (default all four), `steps=`,
`runlocal`.
"""

import ml_collections

from vitpose_jax import configlib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = configlib.parse_arg(arg, stage='tokens', tokens=1, student='nano', kd=1.0, tasks='',
                            steps=300, runlocal=False)
  if arg.stage not in ('tokens', 'student'):
    raise ValueError(f'config argument stage={arg.stage!r}: use tokens or student')
  if arg.tokens < 1:
    raise ValueError(f'config argument tokens={arg.tokens}: needs at least one token per task')
  own = [f'tasks={arg.tasks}'] + (['runlocal'] if arg.runlocal else [])
  parts = own + ['scratch']  # the multi-task config's arguments: never the shipped model
  multitask = configlib.sibling_config(__file__, 'multitask')
  if arg.stage == 'tokens':
    config = multitask.get_config(','.join(parts))
    config.model.variant = 'init_from'
    config.model.knowledge_tokens = arg.tokens
    config.trainable = 'tokens'
    config.optimizer.weight_decay = 0.0
  else:
    config = multitask.get_config(','.join(parts + [f'variant={arg.student}']))
  config.trainer = 'distill'
  config.stage = arg.stage
  config.teacher = ''
  config.tokens_from = ''
  config.heatmap_distill_weight = arg.kd if arg.stage == 'student' else 0.0
  if not arg.runlocal:
    configlib.set_duration(config, steps=arg.steps)
    config.schedule.warmup_steps = 20
  # What a smoke run trains when it is given no teacher (and, for stage 2, no tokens); other runs
  # have neither key.
  if arg.runlocal:
    config.teacher_config = multitask.get_config(','.join(parts + ['variant=micro']))
    if arg.stage == 'student':
      config.tokens_config = get_config(','.join(own + ['stage=tokens', f'tokens={arg.tokens}']))
  return config
