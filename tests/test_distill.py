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


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('cache'))
  old = os.environ.get('VITPOSE_JAX_CACHE')
  os.environ['VITPOSE_JAX_CACHE'] = path
  yield path
  if old is None:
    del os.environ['VITPOSE_JAX_CACHE']
  else:
    os.environ['VITPOSE_JAX_CACHE'] = old


def _config(arg, **values):
  config = configlib.sibling_config(os.path.join(CONFIGS, 'x.py'), 'distill').get_config(arg)
  with config.unlocked():
    for k, v in values.items():
      config[k] = v
  return config


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


def test_stage_one_smoke_run_trains_its_own_teacher(cache, tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': cache}
  out = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.main',
       f'--config={CONFIGS}/distill.py:stage=tokens,runlocal,tasks=coco+infant',
       f'--workdir={tmp_path / "run"}', '--config.plots=0'],
      env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'training a smoke-run teacher' in out.stdout
  assert os.path.isfile(tmp_path / 'run' / 'teacher' / 'metrics.json')
  assert models.ModelConfig.load(str(tmp_path / 'run')).num_knowledge_tokens == 1
  assert 'final:' in out.stdout
