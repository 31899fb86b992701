"""Knowledge-token and heatmap distillation (docs/design.md), run by ``configs/distill.py``.

Stage 1 (``stage=tokens``) is a training run of the teacher's own network with
``config.model.knowledge_tokens`` tokens per task added, every other weight loaded from
``config.teacher`` and frozen (``config.trainable = 'tokens'``, which also runs the network in
inference mode: BatchNorm statistics stay the teacher's), trained on each task's ground-truth
loss. Its run directory is the teacher plus its tokens.

Stage 2 (``stage=student``) trains a student whose sequence gets the frozen tokens of
``config.tokens_from`` (a stage-1 run) through a learned linear bridge, on the ground-truth loss
plus ``config.heatmap_distill_weight`` × the MSE to the heatmaps of ``config.teacher``, which runs
in inference mode inside the same jitted step. Without ``tokens_from`` it is heatmap distillation
alone; with weight 0, token distillation alone. Every run directory is a normal one.

Smoke runs (``:runlocal``) given no teacher train a tiny one first (and, for stage 2, its tokens)
under the workdir.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from vitpose_jax import train

STAGES = ('tokens', 'student')


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the distillation stage ``config.stage`` and returns its final metrics."""
  if config.stage not in STAGES:
    raise train.TrainingError(f'config.stage {config.stage!r} is not one of {STAGES}')
  teacher = config.teacher
  if not teacher:
    if config.get('teacher_config') is None:
      raise train.TrainingError('config.teacher is empty: pass --config.teacher=RUN (a trained '
                                'multi-task run or converted checkpoint)')
    teacher = os.path.join(workdir, 'teacher')
    print(f'no config.teacher: training a smoke-run teacher in {teacher}', flush=True)
    train.train_and_evaluate(config.teacher_config, teacher)
  with config.unlocked():
    config.teacher = teacher
    if config.stage == 'tokens':
      config.init_from = teacher
    elif not config.tokens_from and config.get('tokens_config') is not None:
      tokens = os.path.join(workdir, 'tokens')
      print(f'no config.tokens_from: learning smoke-run tokens in {tokens}', flush=True)
      stage_one = config.tokens_config
      with stage_one.unlocked():
        stage_one.teacher = teacher
      run(stage_one, tokens)
      config.tokens_from = tokens
  return train.train_and_evaluate(config, workdir)
