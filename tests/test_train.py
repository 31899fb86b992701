"""The trainer end to end on tiny models: run directory, resumption, data parallelism, failures."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vitpose_jax import train

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'multitask.py')


def _config(arg='runlocal,variant=nano,tasks=coco+infant', **overrides):
  from vitpose_jax import configlib

  return configlib.override(configlib.sibling_config(CONFIG, 'multitask').get_config(arg),
                            overrides)


def _rows(workdir, name='metrics.jsonl'):
  with open(os.path.join(workdir, name)) as f:
    return [json.loads(line) for line in f]


def test_runlocal_writes_the_run_directory_and_a_rerun_resumes(cache, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  metrics = train.train_and_evaluate(_config(), workdir)
  assert metrics['step'] == 3
  assert {'coco/AP', 'infant/AP', 'infant/PCKh@0.5', 'mean/AP', 'train/loss'} <= set(metrics)
  names = set(os.listdir(workdir))
  assert {'config.json', 'model.json', 'checkpoints', 'metrics.json', 'plots'} <= names
  assert any(n.startswith('events') for n in names)
  assert json.loads(open(os.path.join(workdir, 'metrics.json')).read())['step'] == 3
  assert sorted(os.listdir(os.path.join(workdir, 'plots'))) == ['coco.png', 'infant.png']
  # One line per log step (runlocal logs every step) with the logged scalars.
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == [1, 2, 3]
  assert {'train/loss', 'train/lr', 'train/grad_norm', 'train/img_per_s',
          'train/coco_loss'} <= set(rows[0])
  assert rows[-1]['train/loss'] == metrics['train/loss']
  # A line logged after the last checkpoint (as by a run killed there) is dropped on resume:
  # the resumed run redoes that step, and the file stays one curve.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write(json.dumps({'step': 4, 'train/loss': -1.0}) + '\n')
  again = train.train_and_evaluate(_config(total_steps=5), workdir)
  assert again['step'] == 5
  assert 'resuming' in capsys.readouterr().out
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5]
  assert rows[3]['train/loss'] != -1.0
  # A finished run, run again, trains nothing and reports the loss of its last step (it was
  # nan, and metrics.json then held a bare NaN, which is not JSON).
  done = train.train_and_evaluate(_config(total_steps=5), workdir)
  assert done['train/loss'] == again['train/loss'] == rows[-1]['train/loss']
  assert json.loads(open(os.path.join(workdir, 'metrics.json')).read(),
                    parse_constant=pytest.fail)['train/loss'] == again['train/loss']


def test_a_non_finite_loss_stops_training_naming_the_step_window(cache, tmp_path):
  import jax
  import numpy as np
  from flax import nnx
  from vitpose_jax import checkpoint

  workdir = str(tmp_path / 'nan')
  base = {'evals': {}, 'plots': 0, 'checkpoint.every_steps': 2}
  train.train_and_evaluate(_config(total_steps=3, **base), workdir)
  # Resumed with a loss that is nan from step 4 on; metrics are fetched (and checked) at log,
  # checkpoint and evaluation steps only, so the failure names the window since the last check.
  nan = {**base, 'checkpoint.every_steps': 100, 'tasks.infant.loss_weight': np.nan}
  with pytest.raises(train.TrainingError,
                     match=r'^non-finite loss nan or parameter norm nan at step 6: it became nan '
                           r'or inf somewhere within steps 4-6; the last checkpoint \(step 3\) '
                           r'is from before it$'):
    train.train_and_evaluate(_config(total_steps=9, log_every_steps=3, **nan), workdir)
  model, step = checkpoint.load_model(workdir)
  assert step == 3
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(nnx.state(model)))
  # Without a log step before it, the check before a checkpoint catches it.
  nan['checkpoint.every_steps'] = 4
  with pytest.raises(train.TrainingError, match=r'at step 4: it became nan or inf at step 4; '):
    train.train_and_evaluate(_config(total_steps=9, log_every_steps=100, **nan), workdir)
  assert checkpoint.load_model(workdir)[1] == 3


_LOSSES = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})
    from test_train import _config
    from vitpose_jax import train
    import jax
    config = _config(total_steps=3, evals={{}}, plots=0,
                     **{{'tasks.coco.batch_size': 8, 'tasks.infant.batch_size': 8,
                        'checkpoint.every_steps': 100, 'log_every_steps': 1}})
    train.train_and_evaluate(config, {workdir!r})
    print('DEVICES', jax.device_count())
''')


def _losses(devices, workdir, cache):
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'VITPOSE_JAX_CACHE': cache, 'JAX_PLATFORMS': 'cpu'}
  code = _LOSSES.format(tests=os.path.dirname(__file__), workdir=workdir)
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'DEVICES {devices}' in out.stdout
  return [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith('step ')]


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_losses(cache, tmp_path):
  one = _losses(1, str(tmp_path / 'one'), cache)
  eight = _losses(8, str(tmp_path / 'eight'), cache)
  assert len(one) == 3
  assert one == pytest.approx(eight, rel=1e-5)


_MAIN = [sys.executable, '-m', 'vitpose_jax.main',
         f'--config={CONFIG}:runlocal,variant=nano,tasks=coco+infant']


def _params(workdir):
  import numpy as np
  import jax
  from flax import nnx
  from vitpose_jax import checkpoint

  model, step = checkpoint.load_model(workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_reached_and_resuming_matches_a_straight_run(cache, tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': cache}
  flags = ['--config.total_steps=8', '--config.checkpoint.every_steps=100', '--config.evals={}',
           '--config.plots=0']
  straight = str(tmp_path / 'straight')
  subprocess.run(_MAIN + flags + [f'--workdir={straight}'], env=env, check=True,
                 capture_output=True)
  interrupted = str(tmp_path / 'interrupted')
  proc = subprocess.Popen(_MAIN + flags + [f'--workdir={interrupted}'], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  for line in proc.stdout:
    if line.startswith('step 2/'):
      proc.send_signal(subprocess.signal.SIGTERM)
      break
  out = proc.stdout.read()
  assert proc.wait(timeout=120) == 143
  reached = int(out.split('checkpoint written at step ')[1].split(';')[0])
  assert 2 <= reached < 8
  assert _params(interrupted)[0] == reached
  subprocess.run(_MAIN + flags + [f'--workdir={interrupted}'], env=env, check=True,
                 capture_output=True)
  (step_a, a), (step_b, b) = _params(straight), _params(interrupted)
  assert step_a == step_b == 8
  assert all((x == y).all() for x, y in zip(a, b))


def _free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


_TWO_FLAGS = ['--config.plots=0', '--config.log_every_steps=1',
              '--config.tasks.coco.batch_size=4', '--config.tasks.infant.batch_size=4']


def _env(cache, devices):
  return {**os.environ, 'VITPOSE_JAX_CACHE': cache, 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}


def _two_processes(flags, workdir, cache):
  port = _free_port()
  return [subprocess.Popen(
      _MAIN + flags + [f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}',
                       '--num_processes=2', f'--process_id={i}'],
      env=_env(cache, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_process_with_four_devices(cache, tmp_path):
  flags = _TWO_FLAGS + ['--config.total_steps=3']

  def losses(text):
    return [float(line.split()[3]) for line in text.splitlines() if line.startswith('step ')]

  one = subprocess.run(_MAIN + flags + ['--config.evals={}', f'--workdir={tmp_path / "one"}'],
                       env=_env(cache, 4), capture_output=True, text=True)
  assert one.returncode == 0, one.stderr[-2000:]
  # The two-process run also evaluates (process 0 on its copy of the model) at the end.
  procs = _two_processes(flags, tmp_path / 'two', cache)
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  assert len(losses(one.stdout)) == 3
  assert losses(outs[0][0]) == pytest.approx(losses(one.stdout), rel=1e-5)
  metrics = json.loads((tmp_path / 'two' / 'metrics.json').read_text())
  assert {'coco/AP', 'infant/AP', 'mean/AP'} <= set(metrics) and metrics['step'] == 3


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_checkpointed_step(cache, tmp_path):
  flags = _TWO_FLAGS + ['--config.total_steps=40', '--config.evals={}',
                        '--config.checkpoint.every_steps=100']
  procs = _two_processes(flags, tmp_path / 'run', cache)
  for line in procs[0].stdout:
    if line.startswith('step 2/'):
      procs[1].send_signal(subprocess.signal.SIGTERM)
      break
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [143, 143], outs[0][1][-2000:] + outs[1][1][-2000:]
  reached = int(outs[1][0].split('checkpoint written at step ')[1].split(';')[0])
  assert 2 <= reached < 40
  assert _params(str(tmp_path / 'run'))[0] == reached


def test_init_from_loads_the_backbone_and_matching_tasks_only(tmp_path):
  import numpy as np
  from flax import nnx
  from conftest import randomize
  from vitpose_jax import checkpoint, models

  source = randomize(models.create_model(models.model_config(
      'nano', {'coco': 'coco17', 'infant': 'infant_smil25'})), seed=1)
  checkpoint.save_model(str(tmp_path / 'src'), source)
  target = models.create_model(models.model_config(
      'nano', {'wheelchair': 'wheelchair23', 'coco': 'coco17'}))
  fresh = nnx.to_pure_dict(nnx.state(target))
  assert models.init_from(target, checkpoint.load_model(str(tmp_path / 'src'))[0]) == [
      'backbone', 'coco']
  src, dst = nnx.to_pure_dict(nnx.state(source)), nnx.to_pure_dict(nnx.state(target))
  np.testing.assert_array_equal(dst['backbone']['pos_embed'], src['backbone']['pos_embed'])
  block_src, block_dst = src['backbone']['blocks'][1]['mlp'], dst['backbone']['blocks'][1]['mlp']
  np.testing.assert_array_equal(block_dst['fc2']['kernel'], block_src['fc2']['kernel'])
  # coco is expert 0 in the source and expert 1 in the target; wheelchair keeps its fresh init.
  np.testing.assert_array_equal(block_dst['experts'][1]['kernel'],
                                block_src['experts'][0]['kernel'])
  np.testing.assert_array_equal(block_dst['experts'][0]['kernel'],
                                fresh['backbone']['blocks'][1]['mlp']['experts'][0]['kernel'])
  np.testing.assert_array_equal(dst['heads']['coco']['final_layer']['kernel'],
                                src['heads']['coco']['final_layer']['kernel'])
  np.testing.assert_array_equal(dst['heads']['wheelchair']['final_layer']['kernel'],
                                fresh['heads']['wheelchair']['final_layer']['kernel'])


def test_init_from_a_dense_model_names_no_expert():
  """A dense source and target (an imported Sapiens or ViTPose) share no expert: the message
  names only what moved, and a task whose head type differs gets nothing."""
  from vitpose_jax import models

  dense = lambda tasks, head='classic': models.create_model(
      models.model_config('nano', tasks, factorized=False, decoder=head))
  source = dense({'coco': 'coco17'})
  assert models.init_from(dense({'infant': 'infant_smil25'}), source, {'infant': 'coco'}) == [
      'backbone', 'infant decoder+13/25 keypoint channels <- coco']
  assert models.init_from(dense({'infant': 'infant_smil25'}, 'simple'), source,
                          {'infant': 'coco'}) == ['backbone']


@pytest.mark.parametrize('shared', [True, False])
def test_a_new_schema_starts_from_the_source_channels_of_the_joints_both_name(tmp_path, shared):
  import jax
  import numpy as np
  from flax import nnx
  from conftest import randomize
  from vitpose_jax import checkpoint, models

  source = randomize(models.create_model(models.model_config('nano', {'coco': 'coco17'})), seed=1)
  checkpoint.save_model(str(tmp_path / 'src'), source)
  target = models.create_model(models.model_config(
      'nano', {'wheelchair': 'wheelchair23', 'infant': 'infant_smil25'}))
  fresh = nnx.to_pure_dict(nnx.state(target))
  loaded = models.init_from(target, checkpoint.load_model(str(tmp_path / 'src'))[0],
                            {'wheelchair': 'coco', 'infant': 'coco'}, shared_keypoints=shared)
  assert loaded[1:] == (['wheelchair expert+decoder+17/23 keypoint channels <- coco',
                         'infant expert+decoder+13/25 keypoint channels <- coco'] if shared else
                        ['wheelchair expert+decoder <- coco', 'infant expert+decoder <- coco'])
  src = nnx.to_pure_dict(nnx.state(source))['heads']['coco']['final_layer']
  dst = nnx.to_pure_dict(nnx.state(target))['heads']
  # wheelchair23 begins with coco17's 17 joints in coco's order; its wheel and footrest points
  # have no coco counterpart. infant_smil25 names 13 of coco's joints (not the eyes and ears).
  copied = {'wheelchair': {j: j for j in range(17)},
            'infant': {24: 0, 16: 5, 17: 6, 18: 7, 19: 8, 20: 9, 21: 10, 1: 11, 2: 12, 4: 13,
                       5: 14, 7: 15, 8: 16}}
  for task, num in (('wheelchair', 23), ('infant', 25)):
    for key in ('kernel', 'bias'):
      got = np.asarray(dst[task]['final_layer'][key])
      init = fresh['heads'][task]['final_layer'][key]
      for j in range(num):
        if shared and j in copied[task]:
          np.testing.assert_array_equal(got[..., j], np.asarray(src[key])[..., copied[task][j]])
        else:
          np.testing.assert_array_equal(got[..., j], np.asarray(init)[..., j])
    # The decoder's feature layers come from coco's either way.
    decoder = nnx.to_pure_dict(nnx.state(source))['heads']['coco']['deconv_layers']
    for a, b in zip(jax.tree.leaves(dst[task]['deconv_layers']), jax.tree.leaves(decoder)):
      np.testing.assert_array_equal(a, b)


def test_keeps_the_last_checkpoints_and_the_best_by_the_configured_metric(cache, tmp_path,
                                                                          monkeypatch):
  from vitpose_jax import checkpoint

  scripted = iter([0.1, 0.5, 0.2, 0.3, 0.5])
  monkeypatch.setattr(train, '_evaluate',
                      lambda *args, **kwargs: {'mean/AP': next(scripted), 'coco/AP': 0.0})
  workdir = str(tmp_path / 'best')
  overrides = {'eval_every_steps': 2, 'plots': 0, 'checkpoint.every_steps': 1,
               'checkpoint.keep': 1}
  metrics = train.train_and_evaluate(_config(total_steps=6, **overrides), workdir)
  assert metrics['mean/AP'] == 0.2
  assert checkpoint.read_best(workdir) == {'metric': 'mean/AP', 'value': 0.5, 'step': 4}
  assert sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints'))) == [4, 6]
  assert checkpoint.load_model(workdir, step='best')[1] == 4
  assert checkpoint.load_model(workdir)[1] == 6
  # A resumed run still knows which step is the best (Orbax reads the steps' records back); an
  # equal value later does not replace it.
  train.train_and_evaluate(_config(total_steps=10, **overrides), workdir)
  assert checkpoint.read_best(workdir)['step'] == 4
  assert sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints'))) == [4, 10]
  assert checkpoint.load_model(workdir, step='best')[1] == 4


def _finetune_config(arg, init_from):
  from vitpose_jax import configlib

  config = configlib.sibling_config(CONFIG, 'finetune').get_config(arg)
  with config.unlocked():
    config.init_from = init_from
    config.evals = {}
    config.plots = 0
  return config


@pytest.mark.parametrize('trainable', ['heads', 'experts+heads'])
def test_finetune_starts_new_tasks_from_a_named_expert_and_freezes_what_it_should(
    cache, tmp_path, trainable):
  import numpy as np
  from flax import nnx
  from conftest import randomize
  from vitpose_jax import checkpoint, models

  source = randomize(models.create_model(models.model_config(
      'nano', {'coco': 'coco17', 'infant': 'infant_smil25'})), seed=1)
  checkpoint.save_model(str(tmp_path / 'src'), source)
  config = _finetune_config(f'tasks=infant+wheelchair,from=coco,train={trainable},runlocal',
                            str(tmp_path / 'src'))
  train.train_and_evaluate(config, str(tmp_path / 'ft'))
  tuned, step = checkpoint.load_model(str(tmp_path / 'ft'))
  assert step == 3
  assert (tuned.config.width, tuned.config.depth, tuned.config.expert_dim) == (32, 2, 8)
  assert [(t.name, t.expert) for t in tuned.config.tasks] == [('infant', 0), ('wheelchair', 1)]
  src, dst = nnx.to_pure_dict(nnx.state(source)), nnx.to_pure_dict(nnx.state(tuned))
  for i in range(2):
    s, d = src['backbone']['blocks'][i], dst['backbone']['blocks'][i]
    np.testing.assert_array_equal(d['attn']['qkv']['kernel'], s['attn']['qkv']['kernel'])
    np.testing.assert_array_equal(d['mlp']['fc2']['kernel'], s['mlp']['fc2']['kernel'])
    # infant keeps its own expert (1 in the source), wheelchair starts from coco's (0).
    pairs = [(d['mlp']['experts'][0], s['mlp']['experts'][1]),
             (d['mlp']['experts'][1], s['mlp']['experts'][0])]
    for new, old in pairs:
      same = np.array_equal(new['kernel'], old['kernel'])
      assert same == (trainable == 'heads')
  np.testing.assert_array_equal(dst['backbone']['pos_embed'], src['backbone']['pos_embed'])
  assert not np.array_equal(dst['heads']['infant']['final_layer']['kernel'],
                            src['heads']['infant']['final_layer']['kernel'])


def test_two_new_tasks_can_start_from_the_same_source_task_and_train(cache, tmp_path):
  """Both start from coco's expert and head: the donated train state must not hold one buffer
  twice (JAX refuses to donate it)."""
  from conftest import randomize
  from vitpose_jax import checkpoint, models

  source = randomize(models.create_model(models.model_config('nano', {'coco': 'coco17'})), seed=1)
  checkpoint.save_model(str(tmp_path / 'src'), source)
  config = _finetune_config('tasks=infant+wheelchair,from=coco,runlocal', str(tmp_path / 'src'))
  train.train_and_evaluate(config, str(tmp_path / 'ft'))
  assert checkpoint.load_model(str(tmp_path / 'ft'))[1] == 3


def test_finetune_errors_name_what_is_missing(cache, tmp_path):
  config = _finetune_config('tasks=infant,runlocal', '')
  with pytest.raises(train.TrainingError, match='--config.init_from=RUN'):
    train.train_and_evaluate(config, str(tmp_path / 'x'))


def test_a_warm_up_longer_than_the_run_is_a_config_error():
  from conftest import tiny_config
  from vitpose_jax import models
  from flax import nnx

  config = _config()
  config.schedule.warmup_steps = 20
  mcfg = tiny_config({'coco': 'coco17'})
  params = nnx.state(models.create_model(mcfg), nnx.Param)
  with pytest.raises(train.TrainingError, match=r'config.schedule \(warmup_steps 20, kind '
                                                r"'cosine'\) for a run of 6 steps: need 0 <= "):
    train.optimizer_and_schedule(config, mcfg, params, total_steps=6, steps_per_epoch=3)


def test_a_teacher_confident_of_no_joint_is_reported_when_the_run_ends(tmp_path, capsys):
  """A zero ``*_confident`` fraction means the teacher's term trained nothing at that step; the
  run's end says at how many logged steps, so a threshold that silences the term is seen."""
  values = {'train/loss': 0.1, 'train/lr': 1e-3}
  with train._Progress(str(tmp_path), start=0, total_steps=30, global_batch=2) as progress:
    for step, confident in ((10, 0.0), (20, 0.25), (30, 0.0)):
      progress.log(step, {**values, 'train/target_confident': confident})
  out = capsys.readouterr().out
  assert ('warning: train/target_confident was 0 at 2 of 3 logged steps (first at step 10)'
          in out)
  with train._Progress(str(tmp_path / 'b'), start=0, total_steps=10, global_batch=2) as progress:
    progress.log(10, {**values, 'train/target_confident': 0.5})
  assert 'warning' not in capsys.readouterr().out
