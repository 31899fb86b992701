"""Heads-only training on a frozen backbone, with and without its features cached
(vitpose_jax/feature_cache.py, configs/finetune.py:train=heads)."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import checkpoint, configlib, feature_cache, models, train
from vitpose_jax.data import transforms

from conftest import SMALL_IMAGE, randomize, tiny_config

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'finetune.py')


def _finetune(arg='tasks=infant,train=heads,augment=none,runlocal', **overrides):
  return configlib.override(configlib.sibling_config(CONFIG, 'finetune').get_config(arg),
                            overrides)


def _augment(config):
  return transforms.AugmentConfig(**config.data.augment)


def test_only_a_deterministic_augmentation_counts_as_off():
  assert not transforms.AugmentConfig().deterministic
  assert transforms.AugmentConfig(flip_prob=0, half_body_prob=0, scale_factor=0, rotation_prob=0,
                                  jitter_prob=0).deterministic
  off = dict(flip_prob=0, half_body_prob=0, scale_factor=0, rotation_prob=0, jitter_prob=0)
  for name, value in [('flip_prob', 0.5), ('scale_factor', 0.1), ('half_body_prob', 0.3),
                      ('brightness', 0.2), ('noise', 3.0)]:
    assert not transforms.AugmentConfig(**{**off, name: value}).deterministic, name
  # A rotation or a jitter that can never happen, or can only be zero, draws nothing.
  assert transforms.AugmentConfig(**{**off, 'rotation_prob': 0.6, 'rotation_factor': 0}).deterministic
  assert transforms.AugmentConfig(**{**off, 'jitter_prob': 0.3, 'jitter_factor': 0}).deterministic


def test_the_cache_is_used_exactly_when_it_gives_the_same_training():
  config = _finetune()
  assert config.feature_cache == 'auto' and config.data.sigma == 0
  assert feature_cache.resolve(config, _augment(config))
  assert not feature_cache.resolve(config, _augment(config), adaptation=object())
  assert not feature_cache.resolve(config, _augment(config), teacher=True)
  assert not feature_cache.resolve(_finetune(feature_cache='off'), _augment(config))
  for arg, why in [('tasks=infant,train=heads,runlocal', 'augment'),
                   ('tasks=infant,train=heads,augment=flip,runlocal', 'augment'),
                   ('tasks=infant,train=experts+heads,augment=none,runlocal', "'heads'"),
                   ('tasks=infant,train=all,augment=none,runlocal', "'heads'")]:
    config = _finetune(arg)
    assert not feature_cache.resolve(config, _augment(config)), arg
    with pytest.raises(ValueError, match=why):
      feature_cache.resolve(_finetune(arg, feature_cache='on'), _augment(config))
  with pytest.raises(ValueError, match="feature_cache 'yes'"):
    feature_cache.resolve(_finetune(feature_cache='yes'), _augment(config))


@pytest.mark.parametrize('head', ['classic', 'sapiens'])
def test_a_cached_step_is_the_uncached_step(head):
  """One heads-only step from the images and one from the cached feature maps of the same
  instances update the heads alike, and neither moves the backbone by a bit."""
  config = _finetune()
  mcfg = tiny_config({'infant': 'infant_smil25'}, decoder=head)
  model = randomize(models.create_model(mcfg, seed=0))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  replicated = NamedSharding(Mesh(np.array(jax.devices()[:1]), ('data',)), P())
  tx, schedule = train.optimizer_and_schedule(config, mcfg, params, total_steps=10,
                                              steps_per_epoch=5)
  state = train.init_state(params, batch_stats, tx, 0)
  step = train.make_train_step(config, mcfg, graphdef, tx, schedule, sharding=replicated,
                               labelled={'infant'})
  rng = np.random.default_rng(0)
  source_images = rng.integers(0, 255, (6, *SMALL_IMAGE, 3), dtype=np.uint8)
  index = np.array([4, 1, 1, 5], np.int32)
  keypoints = {'keypoints': rng.uniform(0, 40, (4, 25, 2)).astype(np.float32),
               'keypoint_weights': (rng.uniform(size=(4, 25)) > 0.2).astype(np.float32)}
  cache = {'infant': jax.jit(lambda m, x: m.feature_maps({'infant': x})['infant'])(
      model, source_images)}
  backbone = jax.tree.map(np.array, params['backbone'])

  plain, plain_metrics = step(jax.tree.map(jnp.copy, state),
                              {'infant': {'image': source_images[index], **keypoints}}, None)
  cached, cached_metrics = step(jax.tree.map(jnp.copy, state),
                                {'infant': {'source_index': index, **keypoints}}, None, cache)
  assert float(plain_metrics['train/loss']) > 0
  np.testing.assert_allclose(float(cached_metrics['train/loss']),
                             float(plain_metrics['train/loss']), rtol=1e-5)
  np.testing.assert_allclose(float(cached_metrics['train/grad_norm']),
                             float(plain_metrics['train/grad_norm']), rtol=1e-4)
  moved = 0
  for (path, a), b, start in zip(jax.tree_util.tree_leaves_with_path(plain['params']['heads']),
                                 jax.tree.leaves(cached['params']['heads']),
                                 jax.tree.leaves(params['heads'])):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, err_msg=str(path))
    moved += not np.array_equal(np.asarray(a), np.asarray(start))
  assert moved == len(jax.tree.leaves(params['heads']))
  for new in (plain, cached):
    for a, b in zip(jax.tree.leaves(backbone), jax.tree.leaves(new['params']['backbone'])):
      np.testing.assert_array_equal(np.asarray(b), a)


def test_feature_maps_and_decode_make_the_model():
  mcfg = tiny_config({'coco': 'coco17', 'infant': 'infant_smil25'}, decoder='sapiens')
  model = randomize(models.create_model(mcfg, seed=1))
  images = {'coco': np.random.default_rng(1).integers(0, 255, (2, *SMALL_IMAGE, 3), np.uint8),
            'infant': np.random.default_rng(2).integers(0, 255, (3, *SMALL_IMAGE, 3), np.uint8)}
  whole, aux = model(images)
  fmaps = model.feature_maps(images)
  assert {t: f.shape for t, f in fmaps.items()} == {
      'coco': (2, *mcfg.grid_size, mcfg.width), 'infant': (3, *mcfg.grid_size, mcfg.width)}
  parts, _ = model.decode(fmaps)
  for t in images:
    np.testing.assert_array_equal(np.asarray(parts[t]), np.asarray(whole[t]))
    np.testing.assert_array_equal(np.asarray(aux[t]['feature_map']), np.asarray(fmaps[t]))
  with pytest.raises(models.ModelConfigError, match=r"feature maps must be \(n, 4, 3, "):
    model.decode({'coco': fmaps['coco'][:, :, :2]})
  with pytest.raises(models.ModelConfigError, match='unknown task'):
    model.decode({'wholebody': fmaps['coco']})


def _heads_run(workdir, init_from, **overrides):
  config = _finetune('tasks=infant,train=heads,augment=none,runlocal', **overrides)
  config.init_from = init_from
  config.plots = 0
  return train.train_and_evaluate(config, str(workdir))


@pytest.mark.slow
def test_heads_only_fine_tuning_with_and_without_the_cache(tmp_path, capsys):
  """configs/finetune.py:train=heads,augment=none end to end: the cached and uncached runs
  train the same heads, and the backbone's weights stay bit for bit the source's."""
  source = tiny_config({'coco': 'coco17'}, decoder='sapiens', heatmap_sigma=1.5).replace(
      pos_embed_cls_slot=False)
  checkpoint.save_model(str(tmp_path / 'source'), randomize(models.create_model(source, seed=3)),
                        step=0)
  # A worker process builds the cached run's batches: its sources must pickle.
  cached = _heads_run(tmp_path / 'cached', str(tmp_path / 'source'), **{'data.num_workers': 1})
  assert 'feature cache infant: ' in capsys.readouterr().out
  plain = _heads_run(tmp_path / 'plain', str(tmp_path / 'source'), feature_cache='off')
  assert 'feature cache' not in capsys.readouterr().out
  np.testing.assert_allclose(cached['train/loss'], plain['train/loss'], rtol=1e-4)

  src, _ = checkpoint.load_model(str(tmp_path / 'source'))
  models_after = {name: checkpoint.load_model(str(tmp_path / name))[0]
                  for name in ('cached', 'plain')}
  want = nnx.to_pure_dict(nnx.state(src.backbone))
  for name, model in models_after.items():
    # The source's codec σ is kept (configs/finetune.py sets data.sigma 0).
    assert model.config.heatmap_sigma == 1.5
    with open(tmp_path / name / 'model.json') as f:
      assert json.load(f)['codec']['sigma'] == 1.5
    got = nnx.to_pure_dict(nnx.state(model.backbone))
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  heads = [nnx.to_pure_dict(nnx.state(m.heads)) for m in models_after.values()]
  for a, b in zip(*map(jax.tree.leaves, heads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert models_after['cached'].config == models_after['plain'].config


class _Accelerator:
  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return {'bytes_limit': self.limit}


def test_a_cache_over_its_memory_budget_is_not_built(capsys):
  mcfg = tiny_config({'infant': 'infant_smil25'})
  rows, cols = mcfg.grid_size
  assert feature_cache.nbytes(mcfg, 3) == 3 * rows * cols * mcfg.width * 4
  assert feature_cache.nbytes(mcfg.replace(dtype='bfloat16'), 3) == 3 * rows * cols * mcfg.width * 2
  # Half of an accelerator's memory; the host's shared by its CPU devices.
  device = [_Accelerator(20 * feature_cache.nbytes(mcfg, 1))]
  assert feature_cache.fits(_finetune(), mcfg, 10, device)
  assert capsys.readouterr().out == ''
  assert not feature_cache.fits(_finetune(), mcfg, 11, device)
  assert 'feature cache off: the feature cache of 11 instances needs' in capsys.readouterr().out
  with pytest.raises(ValueError, match=r'"on" but the feature cache of 11 instances .* over its '
                                       r'budget'):
    feature_cache.fits(_finetune(feature_cache='on'), mcfg, 11, device)
  cpu = jax.local_devices()
  assert feature_cache.budget(cpu) * len(cpu) * 2 <= os.sysconf('SC_PHYS_PAGES') * os.sysconf(
      'SC_PAGE_SIZE')


def test_an_indexed_source_numbers_its_records_and_goes_to_worker_processes():
  indexed = feature_cache.IndexedSource([{'image_id': 7}, {'image_id': 9}])
  # grain's worker processes receive the source pickled.
  copy = pickle.loads(pickle.dumps(indexed))
  assert len(copy) == 2
  assert copy[1] == {'image_id': 9, 'source_index': 1}
  assert copy[1]['source_index'].dtype == np.int32


def test_a_heads_only_run_says_why_it_has_no_cache(capsys):
  config = _finetune('tasks=infant,train=heads,augment=flip,runlocal')
  assert not feature_cache.resolve(config, _augment(config))
  assert capsys.readouterr().out.startswith('feature cache off: config.data.augment has random')
  config = _finetune('tasks=infant,train=all,augment=none,runlocal')
  assert not feature_cache.resolve(config, _augment(config))
  # Where nothing is frozen, no cache is expected and nothing is said.
  assert capsys.readouterr().out == ''
