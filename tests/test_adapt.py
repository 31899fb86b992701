"""Adaptation without target labels in the trainer: unlabeled tasks, the mean-teacher step and
its checkpoints, configs/adapt.py end to end."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import checkpoint, configlib, models, train
from vitpose_jax.adapt import meanteacher

from conftest import SMALL_IMAGE, tiny_config

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'adapt.py')
TASKS = {'coco': 'coco17', 'target': 'coco17'}


def _adapt_config(arg='method=meanteacher,runlocal', **overrides):
  return configlib.override(configlib.sibling_config(CONFIG, 'adapt').get_config(arg), overrides)


def _step_setup(config, mean_teacher=None):
  mcfg = tiny_config({'coco': 'coco17'})
  model = models.create_model(mcfg, seed=0)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  replicated = NamedSharding(Mesh(np.array(jax.devices()[:1]), ('data',)), P())
  tx, schedule = train.optimizer_and_schedule(config, mcfg, params, total_steps=10,
                                              steps_per_epoch=5)
  state = train.init_state(params, batch_stats, tx, 0, teacher=mean_teacher is not None)
  step = train.make_train_step(config, mcfg, graphdef, tx, schedule, sharding=replicated,
                               adaptation=mean_teacher, labelled=train.labelled_tasks(config))
  return mcfg, state, step


def _batch(rng, n=2, views=False):
  h, w = SMALL_IMAGE
  out = {}
  for t in TASKS:
    kp_rng = np.random.default_rng(0)
    out[t] = {'image': rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
              'keypoints': kp_rng.uniform(0, 40, (n, 17, 2)).astype(np.float32),
              'keypoint_weights': np.ones((n, 17), np.float32)}
  if views:
    out['target'].update(
        image_weak=rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
        view_transform=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        view_flip=np.array([0.0, 1.0][:n], np.float32),
        mask_distance=np.zeros((n, h, w), np.float32), mask_weight=np.ones((n,), np.float32))
  return out


def test_an_unlabeled_task_never_gets_a_supervised_loss(cache):
  config = _adapt_config()
  mt = meanteacher.MeanTeacher(target='target', model_task='coco', decay=0.9, threshold=0.0, consistency_weight=1.0,
                               flip_index=tuple(range(17)), input_size=SMALL_IMAGE,
                               heatmap_size=(16, 12))
  _, state, step = _step_setup(config, mt)
  assert train.labelled_tasks(config) == {'coco'}
  results = []
  for keypoint_seed in (0, 1):
    # Two batches alike but for the target's keypoints and weights: they must not matter.
    batch = _batch(np.random.default_rng(0), views=True)
    for name in ('keypoints', 'keypoint_weights'):
      batch['target'][name] = np.random.default_rng(keypoint_seed + 7).uniform(
          0, 1, batch['target'][name].shape).astype(np.float32) * 40
    new, metrics = step(jax.tree.map(jnp.copy, state), batch, None)
    results.append(new)
    assert 'train/target_loss' not in metrics and 'train/coco_loss' in metrics
    assert {'train/coco_loss', 'train/target_consistency', 'train/target_confident'} <= set(
        metrics)
  for a, b in zip(jax.tree.leaves(results[0]['params']), jax.tree.leaves(results[1]['params'])):
    np.testing.assert_array_equal(a, b)


def test_an_unlabeled_task_without_a_method_is_refused(cache):
  config = _adapt_config()
  with config.unlocked():
    config.adapt.method = ''
  mcfg = tiny_config({'coco': 'coco17'})
  with pytest.raises(train.TrainingError, match=r"tasks \['target'\] have labels=False"):
    train._adaptation(config, mcfg)
  config = _adapt_config('method=meanteacher,prior,runlocal')
  with config.unlocked():
    config.adapt.prior.poses.seed = 1000
  with pytest.raises(train.TrainingError, match='adapt.prior.poses: synthetic seed 1000 is a test'):
    train._check_test_seeds(config)
  config = _adapt_config()
  with config.unlocked():
    config.evals.target.data = config.tasks.target.train
  with pytest.raises(train.TrainingError,
                     match=r'evals.target: its data \(evals.target.data\) has no labels'):
    train.resolve_evals(config)


def test_the_target_streams_validation_data_is_what_its_evaluation_scores():
  config = _adapt_config()
  mine = {'source': 'coco', 'annotations': 'v.json', 'images': 'i/'}
  with config.unlocked():
    config.tasks.target.val = mine
  resolved = train.resolve_evals(config)
  # The coco head (the target stream trains it) on the target's own validation data.
  assert resolved.evals.target.task == 'coco'
  assert resolved.evals.target.data.to_dict() == mine
  with config.unlocked():
    config.tasks.target.val = dict(mine, labels=False)
  with pytest.raises(train.TrainingError, match=r'its data \(tasks.target.val\) has no labels'):
    train.resolve_evals(config)


@pytest.mark.parametrize('method', ['meanteacher', 'adversarial'])
def test_steps_sets_the_run_length_with_or_without_runlocal(method):
  """runlocal's 3 steps are a default, not an override: `steps=` wins (it was ignored)."""
  def steps(arg):
    return _adapt_config(f'method={method}' + (f',{arg}' if arg else '')).total_steps

  assert (steps(''), steps('runlocal'), steps('steps=40'), steps('runlocal,steps=7')) == (
      300, 3, 40, 7)
  with pytest.raises(ValueError, match='steps=-2'):
    steps('steps=-2')


@pytest.mark.slow
def test_the_teacher_follows_the_student_by_ema_and_is_checkpointed(cache, tmp_path):
  config = _adapt_config()
  mt = meanteacher.MeanTeacher(target='target', model_task='coco', decay=0.75, threshold=0.5,
                               consistency_weight=1.0, flip_index=tuple(range(17)),
                               input_size=SMALL_IMAGE, heatmap_size=(16, 12))
  mcfg, state, step = _step_setup(config, mt)
  before = jax.tree.map(np.asarray, state['teacher'])
  new, _ = step(jax.tree.map(jnp.copy, state), _batch(np.random.default_rng(0), views=True),
                None)
  expected = jax.tree.map(lambda t, s: 0.75 * t + 0.25 * np.asarray(s), before,
                          {'params': new['params'], 'batch_stats': new['batch_stats']})
  for a, b in zip(jax.tree.leaves(new['teacher']), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  graphdef = nnx.graphdef(models.create_model(mcfg, seed=0))
  with checkpoint.TrainCheckpoints(str(tmp_path), graphdef, keep=1) as ckpt:
    ckpt.save(1, new, {'x': 1})
    ckpt.wait()
    restored, _ = ckpt.restore(1, state)
  for a, b in zip(jax.tree.leaves(restored['teacher']), jax.tree.leaves(new['teacher'])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_adapt_meanteacher_runlocal_runs_end_to_end(cache, tmp_path):
  config = _adapt_config('method=meanteacher,prior,silhouette,runlocal')
  metrics = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert metrics['step'] == 3
  assert 'target/AP' in metrics and 'coco/AP' not in metrics
  rows = [__import__('json').loads(line)
          for line in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert {'train/coco_loss', 'train/target_consistency', 'train/target_prior',
          'train/target_silhouette'} <= set(rows[-1])
  assert all(np.isfinite(rows[-1][k]) for k in rows[-1])
