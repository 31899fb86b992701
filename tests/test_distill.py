"""Knowledge-token distillation, stage 1: only the tokens learn; the teacher stays intact."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import randomize
from vitpose_jax import checkpoint, configlib, distill, models, train

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


def _config(arg, **values):
  config = configlib.sibling_config(os.path.join(CONFIGS, 'x.py'), 'distill').get_config(arg)
  return configlib.override(config, values)


@pytest.mark.slow
def test_stage_one_trains_only_the_tokens_and_keeps_every_teacher_weight_and_statistic(
    cache, tmp_path):
  teacher = randomize(models.create_model(models.model_config(
      'nano', {'coco': 'coco17', 'infant': 'infant_smil25'})), seed=3)
  checkpoint.save_model(str(tmp_path / 'teacher'), teacher)
  config = _config('stage=tokens,tokens=2,runlocal,tasks=coco+infant',
                   teacher=str(tmp_path / 'teacher'), evals={}, plots=0, total_steps=4)
  distill.run(config, str(tmp_path / 'tokens'))
  tuned, step = checkpoint.load_model(str(tmp_path / 'tokens'))
  assert step == 4 and tuned.config.num_knowledge_tokens == 2
  before = nnx.to_pure_dict(nnx.state(teacher))
  after = nnx.to_pure_dict(nnx.state(tuned))
  tokens = {k: after['backbone'].pop(k) for k in ('knowledge_tokens', 'knowledge_pos')}
  # Every parameter and BatchNorm statistic of the teacher, bitwise.
  assert jax.tree.structure(before) == jax.tree.structure(after)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  fresh = models.create_model(tuned.config, seed=config.seed).backbone
  assert not np.array_equal(tokens['knowledge_tokens'], fresh.knowledge_tokens[...])
  assert np.abs(tokens['knowledge_pos']).max() > 0


def test_stage_one_needs_a_teacher_outside_smoke_runs(tmp_path):
  config = _config('stage=tokens')
  with pytest.raises(train.TrainingError, match='--config.teacher=RUN'):
    distill.run(config, str(tmp_path / 'x'))


def _smoke_run(stage, workdir, cache):
  out = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.main',
       f'--config={CONFIGS}/distill.py:stage={stage},runlocal,tasks=coco+infant',
       f'--workdir={workdir}', '--config.plots=0'],
      env={**os.environ, 'VITPOSE_JAX_CACHE': cache}, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.mark.slow
def test_stage_one_smoke_run_trains_its_own_teacher(cache, tmp_path):
  out = _smoke_run('tokens', tmp_path / 'run', cache)
  assert 'training a smoke-run teacher' in out.stdout
  assert os.path.isfile(tmp_path / 'run' / 'teacher' / 'metrics.json')
  assert models.ModelConfig.load(str(tmp_path / 'run')).num_knowledge_tokens == 1
  assert 'final:' in out.stdout


def test_heatmap_distillation_is_zero_on_the_teachers_heatmaps_and_never_moves_the_teacher():
  from vitpose_jax import codec

  teacher = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  student = jax.random.normal(jax.random.key(1), (2, 8, 6, 3))
  assert float(codec.heatmap_distillation(teacher, teacher)) == 0.0
  assert float(codec.heatmap_distillation(student, teacher)) > 0.0
  grad_student, grad_teacher = jax.grad(codec.heatmap_distillation, argnums=(0, 1))(
      student, teacher)
  assert np.abs(grad_student).max() > 0 and np.abs(grad_teacher).max() == 0


@pytest.mark.slow
def test_stage_two_keeps_the_teachers_tokens_frozen_and_trains_the_bridge(cache, tmp_path):
  tasks = {'coco': 'coco17', 'infant': 'infant_smil25'}
  teacher_cfg = models.model_config('micro', tasks)
  teacher = randomize(models.create_model(teacher_cfg), seed=4)
  checkpoint.save_model(str(tmp_path / 'teacher'), teacher)
  with_tokens = randomize(models.create_model(teacher_cfg.replace(num_knowledge_tokens=2)),
                          seed=5)
  checkpoint.save_model(str(tmp_path / 'tokens'), with_tokens)
  config = _config('stage=student,student=nano,runlocal,tasks=coco+infant',
                   teacher=str(tmp_path / 'teacher'), tokens_from=str(tmp_path / 'tokens'),
                   evals={}, plots=0, total_steps=3)
  distill.run(config, str(tmp_path / 'student'))
  student, step = checkpoint.load_model(str(tmp_path / 'student'))
  assert step == 3
  cfg = student.config
  assert (cfg.width, cfg.num_knowledge_tokens, cfg.knowledge_source_width) == (32, 2, 96)
  want = with_tokens.knowledge_tokens()
  got = student.backbone.knowledge_tokens[...]
  for i, name in enumerate(cfg.task_names):
    np.testing.assert_array_equal(got[i], want[name])
  fresh = models.create_model(cfg, seed=config.seed).backbone.knowledge_bridge
  assert student.backbone.knowledge_bridge.kernel.shape == (96, 32)
  assert not np.array_equal(student.backbone.knowledge_bridge.kernel[...], fresh.kernel[...])
  # The loaded student runs on its own, bridge and frozen tokens included.
  images = {'coco': jax.random.normal(jax.random.key(0), (1, 256, 192, 3))}
  assert student(images)[0]['coco'].shape == (1, 64, 48, 17)


@pytest.mark.slow
def test_stage_two_smoke_run_trains_teacher_tokens_and_student(cache, tmp_path):
  out = _smoke_run('student', tmp_path / 'run', cache)
  assert 'learning smoke-run tokens' in out.stdout
  student = models.ModelConfig.load(str(tmp_path / 'run'))
  teacher = models.ModelConfig.load(str(tmp_path / 'run' / 'teacher'))
  assert (student.variant, teacher.variant) == ('nano', 'micro')
  assert student.knowledge_source_width == teacher.width
