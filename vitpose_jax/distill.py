"""Knowledge-token distillation (DESIGN §7), stage 1: learn a frozen teacher's knowledge tokens.

Stage 1 (``configs/distill.py:stage=tokens``) is a training run of the teacher's own network with
``config.model.knowledge_tokens`` tokens per task added, every other weight loaded from
``config.teacher`` and frozen (``config.trainable = 'tokens'``, which also runs the network in
inference mode: BatchNorm statistics stay the teacher's), trained on each task's ground-truth
loss. Its run directory is a normal one (the teacher plus its tokens), usable by ``predict``,
``evaluate`` and as ``config.tokens_from`` of stage 2.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from vitpose_jax import train


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the distillation stage ``config.stage`` and returns its final metrics."""
  if config.stage != 'tokens':
    raise train.TrainingError(f'config.stage {config.stage!r}: this version runs stage '
                              "'tokens' (stage 1)")
  teacher = config.teacher
  if not teacher:
    # Smoke runs (`:runlocal`) carry a tiny teacher's config and train it first.
    if not config.get('teacher_config'):
      raise train.TrainingError('config.teacher is empty: pass --config.teacher=RUN (a trained '
                                'multi-task run or converted checkpoint)')
    teacher = os.path.join(workdir, 'teacher')
    print(f'no config.teacher: training a smoke-run teacher in {teacher}', flush=True)
    train.train_and_evaluate(config.teacher_config, teacher)
  with config.unlocked():
    config.init_from = teacher
  return train.train_and_evaluate(config, workdir)
