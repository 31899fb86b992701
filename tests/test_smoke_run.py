"""Install and smoke run (issue 17, kind 8): safetensors needs no extra, and a `:runlocal` smoke
run starts on any device count."""

import os
import subprocess
import sys
import textwrap
import tomllib

import ml_collections
import pytest

from vitpose_jax import configlib, train

ROOT = os.path.join(os.path.dirname(__file__), '..')
CONFIG = os.path.join(ROOT, 'configs', 'multitask.py')


def test_safetensors_is_a_base_dependency():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  names = [d.split('>')[0].split('=')[0] for d in project['dependencies']]
  assert 'safetensors' in names
  assert not any(d.startswith('safetensors') for d in project['optional-dependencies']['interop'])


def test_a_safetensors_file_is_read_without_torch(tmp_path):
  code = textwrap.dedent(f'''
      import sys
      sys.modules['torch'] = None  # any import of torch fails
      import numpy as np
      from safetensors.numpy import save_file
      from vitpose_jax.interop.files import read_state_dict
      save_file({{'w': np.arange(6, dtype=np.float32).reshape(2, 3)}}, {str(tmp_path / 'm.safetensors')!r})
      print(read_state_dict({str(tmp_path / 'm.safetensors')!r})['w'].tolist())
  ''')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == '[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]'


def _tasks(**batch_sizes):
  config = ml_collections.ConfigDict({'tasks': {name: {'batch_size': b}
                                                for name, b in batch_sizes.items()}})
  config.lock()
  return config


def test_smoke_runs_round_batches_up_to_a_multiple_of_the_devices(capsys):
  config = _tasks(coco=2, infant=8, wholebody=9)
  with config.unlocked():
    config.round_batch_to_devices = True
  train.fit_batches_to_devices(config, 8)
  assert {n: t.batch_size for n, t in config.tasks.items()} == {
      'coco': 8, 'infant': 8, 'wholebody': 16}
  assert capsys.readouterr().out.splitlines() == [
      'tasks.coco.batch_size 2 → 8: a multiple of the 8 devices (config.round_batch_to_devices)',
      'tasks.wholebody.batch_size 9 → 16: a multiple of the 8 devices '
      '(config.round_batch_to_devices)']


def test_other_runs_keep_their_batch_size_or_fail_naming_it():
  config = _tasks(coco=8, infant=6)
  with pytest.raises(train.TrainingError,
                     match='^tasks.infant.batch_size 6 is not divisible by the 4 devices$'):
    train.fit_batches_to_devices(config, 4)
  train.fit_batches_to_devices(config, 2)
  assert config.tasks.infant.batch_size == 6


@pytest.mark.parametrize('name', ['multitask', 'single_task', 'finetune', 'distill'])
def test_only_runlocal_configs_round(name):
  module = configlib.sibling_config(CONFIG, name)
  assert module.get_config('runlocal').round_batch_to_devices is True
  assert module.get_config('').round_batch_to_devices is False


@pytest.mark.slow
def test_runlocal_runs_on_8_devices(tmp_path):
  """The issue's command with 8 fake CPU devices, one task and no evaluation to keep it short."""
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache'), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  done = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.main', f'--config={CONFIG}:runlocal,tasks=coco',
       '--config.tasks.coco.train.num=8', '--config.evals={}', '--config.plots=0',
       "--config.checkpoint.best_metric=", f'--workdir={tmp_path / "run"}'],
      capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'tasks.coco.batch_size 2 → 8: a multiple of the 8 devices' in done.stdout
  assert 'step 3/3' in done.stdout
