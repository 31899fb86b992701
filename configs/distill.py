r"""Knowledge-token distillation (DESIGN §7). Stage 1 learns n knowledge tokens per task on a
frozen teacher (every weight and BatchNorm statistic unchanged, inference mode, ground-truth loss):

  python -m vitpose_jax.main --config=configs/distill.py:stage=tokens \
      --config.teacher=/tmp/vitpose_multitask --workdir=/tmp/vitpose_tokens

  # smoke run (< 1 minute): trains its own tiny teacher under WORKDIR/teacher first
  python -m vitpose_jax.main --config=configs/distill.py:stage=tokens,runlocal --workdir=/tmp/t

Arguments: `stage=tokens`, `tokens=` (n per task, default 1), `tasks=a+b` (the teacher's task
names; default all four), `steps=`, `runlocal`. The result is a run directory holding the teacher
with its tokens. Stage 2 (`stage=student`: a smaller student trained with the teacher's frozen
tokens through a linear bridge plus heatmap distillation) is not in this version.
"""

import ml_collections

from vitpose_jax import configlib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = configlib.parse_arg(arg, stage='tokens', tokens=1, tasks='', steps=300, runlocal=False)
  if arg.stage != 'tokens':
    raise ValueError(f'config argument stage={arg.stage!r}: this version has stage=tokens only')
  if arg.tokens < 1:
    raise ValueError(f'config argument tokens={arg.tokens}: needs at least one token per task')
  parts = [f'tasks={arg.tasks}'] + (['runlocal'] if arg.runlocal else [])
  multitask = configlib.sibling_config(__file__, 'multitask')
  config = multitask.get_config(','.join(parts))
  config.trainer = 'distill'
  config.stage = arg.stage
  config.teacher = ''
  config.model.variant = 'init_from'
  config.model.knowledge_tokens = arg.tokens
  config.trainable = 'tokens'
  config.optimizer.lr = 1e-3
  config.optimizer.weight_decay = 0.0
  if not arg.runlocal:
    config.total_steps = arg.steps
    config.schedule.warmup_steps = 20
  config.teacher_config = (multitask.get_config(','.join(parts + ['variant=nano']))
                           if arg.runlocal else None)
  return config
