"""The ViTPose optimizer recipe: layer ids and lr scales, the weight decay mask, the schedules,
AdamW with layer decay against optax.adamw, clipping, frozen parameters and duration units."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import SMALL_IMAGE
from vitpose_jax import models, optim

WD = 0.1


@pytest.fixture(scope='module')
def model():
  return models.create_model(models.model_config('nano', ['coco17'], image_size=SMALL_IMAGE))


@pytest.fixture(scope='module')
def params(model):
  return nnx.state(model, nnx.Param)


def flat(tree):
  """{normalised path: leaf} of a params-shaped tree."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {optim.normalize_path(path): leaf for path, leaf in leaves}


def random_grads(params, seed, scale=1.0):
  # NumPy draws: jax.random would compile once per leaf shape, which dominates these tests.
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), params)


def run(tx, params, grads_seq):
  """The updates of every step, applying each to the params as a trainer would."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def assert_trees_close(a, b, **kw):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for path in fa:
    np.testing.assert_allclose(fa[path], fb[path], err_msg=str(path), **kw)


def lr_schedule():
  return optim.schedule(base_lr=1e-3, total_steps=100, warmup_steps=2, decay_steps=(3,))


def test_layer_ids_follow_the_vitpose_recipe(model, params):
  depth = model.config.depth
  ids = {path: optim.layer_id(path, depth) for path in flat(params)}
  assert ids[('backbone', 'pos_embed')] == 0
  assert ids[('backbone', 'patch_embed', 'proj', 'kernel')] == 0
  for i in range(depth):
    assert ids[('backbone', 'blocks', i, 'attn', 'qkv', 'kernel')] == i + 1
    assert ids[('backbone', 'blocks', i, 'mlp', 'experts', 0, 'bias')] == i + 1
  assert ids[('backbone', 'last_norm', 'scale')] == depth + 1
  assert ids[('heads', 'coco17', 'deconv_layers', 0, 'kernel')] == depth + 1
  assert ids[('heads', 'coco17', 'final_layer', 'bias')] == depth + 1
  assert set(ids.values()) == set(range(depth + 2))
  with pytest.raises(ValueError, match='block 2 of a backbone of depth 2'):
    optim.layer_id(('backbone', 'blocks', 2, 'attn', 'qkv', 'kernel'), depth)


def test_lr_scales_are_rate_to_the_layers_left(model, params):
  depth, rate = model.config.depth, 0.75
  scales = optim.lr_scales(params, depth, rate)
  assert jax.tree.structure(scales) == jax.tree.structure(params)
  for path, scale in flat(scales).items():
    assert scale == rate ** (depth + 1 - optim.layer_id(path, depth))
  assert flat(scales)[('backbone', 'pos_embed')] == rate ** (depth + 1)
  assert flat(scales)[('heads', 'coco17', 'final_layer', 'kernel')] == 1.0
  # Hard-coded for the depth-2 model and rate 0.75, group by group.
  assert depth == 2
  expected = {('backbone', 'patch_embed', 'proj', 'kernel'): 0.421875,
              ('backbone', 'pos_embed'): 0.421875,
              ('backbone', 'blocks', 0, 'attn', 'qkv', 'kernel'): 0.5625,
              ('backbone', 'blocks', 0, 'mlp', 'fc2', 'bias'): 0.5625,
              ('backbone', 'blocks', 1, 'norm2', 'scale'): 0.75,
              ('backbone', 'blocks', 1, 'mlp', 'experts', 0, 'kernel'): 0.75,
              ('backbone', 'last_norm', 'bias'): 1.0,
              ('heads', 'coco17', 'deconv_layers', 0, 'kernel'): 1.0}
  for path, value in expected.items():
    assert flat(scales)[path] == value, path


def test_weight_decay_mask_skips_biases_norms_and_pos_embed(params):
  mask = flat(optim.weight_decay_mask(params))
  assert not mask[('backbone', 'pos_embed')]
  assert not mask[('backbone', 'blocks', 0, 'attn', 'qkv', 'bias')]
  assert not mask[('backbone', 'blocks', 1, 'norm1', 'scale')]
  assert not mask[('backbone', 'last_norm', 'scale')]
  assert not mask[('heads', 'coco17', 'deconv_norms', 0, 'scale')]
  assert mask[('backbone', 'patch_embed', 'proj', 'kernel')]
  assert mask[('backbone', 'blocks', 1, 'mlp', 'experts', 0, 'kernel')]
  assert mask[('heads', 'coco17', 'deconv_layers', 1, 'kernel')]
  assert mask[('heads', 'coco17', 'final_layer', 'kernel')]
  assert {p for p, m in mask.items() if m} == {p for p, x in flat(params).items()
                                               if x.ndim > 1 and p != ('backbone', 'pos_embed')}


def test_without_layer_decay_it_is_optax_adamw(model, params):
  sched = lr_schedule()
  grads = [random_grads(params, seed) for seed in range(4)]
  ours = optim.make_optimizer(params, depth=model.config.depth, weight_decay=WD, layer_decay=1.0,
                              schedule=sched)
  reference = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(sched, b1=0.9, b2=0.999, weight_decay=WD,
                  mask=optim.weight_decay_mask(params)))
  for got, want in zip(run(ours, params, grads), run(reference, params, grads)):
    assert_trees_close(got, want, rtol=1e-6, atol=1e-12)


def test_layer_decay_scales_the_whole_update_of_each_layer(model, params):
  depth, rate, lr = model.config.depth, 0.5, 1e-3
  grads = [random_grads(params, seed=1)]
  decayed, = run(optim.make_optimizer(params, depth=depth, weight_decay=WD, layer_decay=rate,
                                      schedule=lr), params, grads)
  plain, = run(optim.make_optimizer(params, depth=depth, weight_decay=WD, layer_decay=1.0,
                                    schedule=lr), params, grads)
  scales = flat(optim.lr_scales(params, depth, rate))
  for path, update in flat(decayed).items():
    np.testing.assert_allclose(update, scales[path] * flat(plain)[path], rtol=1e-6,
                               err_msg=str(path))
  # Adam's first step is g / (|g| + eps) after bias correction; decay is lr-scaled like the step.
  kernel = ('backbone', 'patch_embed', 'proj', 'kernel')
  g, p = flat(grads[0])[kernel] / optax.tree.norm(grads[0]), flat(params)[kernel]
  expected = -lr * rate ** (depth + 1) * (g / (jnp.abs(g) + 1e-8) + WD * p)
  np.testing.assert_allclose(flat(decayed)[kernel], expected, rtol=1e-5, atol=1e-12)


def test_step_schedule_warms_up_then_decays_at_the_boundaries():
  base = 5e-4
  sched = optim.schedule(base_lr=base, total_steps=2100, warmup_steps=500,
                         decay_steps=(1700, 2000))
  want = {0: 1e-3 * base, 250: (1e-3 + 0.999 * 0.5) * base, 500: base, 1699: base,
          1700: 0.1 * base, 1999: 0.1 * base, 2000: 0.01 * base, 2100: 0.01 * base}
  for step, lr in want.items():
    np.testing.assert_allclose(sched(step), lr, rtol=1e-5, err_msg=str(step))
  no_warmup = optim.schedule(base_lr=base, total_steps=10, warmup_steps=0, decay_steps=(5,))
  np.testing.assert_allclose([no_warmup(s) for s in (0, 4, 5)], [base, base, 0.1 * base],
                             rtol=1e-6)


def test_cosine_schedule_ends_at_min_lr():
  base = 1e-3
  sched = optim.schedule(base_lr=base, total_steps=1000, warmup_steps=100, kind='cosine',
                         min_lr_ratio=0.01)
  np.testing.assert_allclose(sched(0), 1e-3 * base, rtol=1e-5)
  np.testing.assert_allclose(sched(100), base, rtol=1e-6)
  np.testing.assert_allclose(sched(550), (0.01 + 0.99 * 0.5) * base, rtol=1e-5)
  np.testing.assert_allclose(sched(1000), 0.01 * base, rtol=1e-5)
  np.testing.assert_allclose(sched(5000), 0.01 * base, rtol=1e-5)


def test_schedule_rejects_bad_arguments():
  with pytest.raises(ValueError, match='unknown schedule kind'):
    optim.schedule(base_lr=1.0, total_steps=10, warmup_steps=1, kind='linear')
  with pytest.raises(ValueError, match='warmup_steps <= total_steps'):
    optim.schedule(base_lr=1.0, total_steps=10, warmup_steps=11)
  with pytest.raises(ValueError, match='come after the warmup'):
    optim.schedule(base_lr=1.0, total_steps=10, warmup_steps=5, decay_steps=(5, 8))
  with pytest.raises(ValueError, match='increase strictly'):
    optim.schedule(base_lr=1.0, total_steps=10, warmup_steps=1, decay_steps=(8, 6))


def test_a_huge_gradient_updates_as_its_clipped_self():
  # A plain-dict tree keyed like the model's: these functions need no nnx.State, and few leaves
  # compile fast.
  depth = 1
  params = {'backbone': {'pos_embed': jnp.ones((1, 5, 4)),
                         'blocks': {0: {'kernel': jnp.ones((4, 4)), 'bias': jnp.ones(4)}}},
            'heads': {'coco': {'kernel': jnp.ones((4, 3))}}}
  small = random_grads(params, seed=2, scale=1e-3)
  huge = random_grads(params, seed=3, scale=1e3)
  norm = optax.tree.norm(huge)
  clipped = jax.tree.map(lambda g: g / norm, huge)

  def second_update(clip_norm, grads):
    tx = optim.make_optimizer(params, depth=depth, weight_decay=WD, layer_decay=0.75,
                              schedule=1e-3, clip_norm=clip_norm)
    return run(tx, params, [small, grads])[1]

  # Updates are ~1e-3; atol covers rounding where Adam's step nearly cancels.
  assert_trees_close(second_update(1.0, huge), second_update(1.0, clipped), rtol=1e-5,
                     atol=1e-9)
  # Adam alone nearly forgives the scale; the moments left by the first step make it show.
  with pytest.raises(AssertionError):
    assert_trees_close(second_update(None, huge), second_update(None, clipped), rtol=1e-3)


@pytest.mark.parametrize('as_tree', [False, True])
def test_frozen_params_get_zero_updates_and_no_adam_state(model, params, as_tree):
  def train(path):
    return path[0] == 'heads' or 'experts' in path

  trainable = (jax.tree_util.tree_map_with_path(
      lambda path, _: train(optim.normalize_path(path)), params) if as_tree else train)
  tx = optim.make_optimizer(params, depth=model.config.depth, weight_decay=WD, layer_decay=0.75,
                            schedule=1e-3, trainable=trainable)
  updates = run(tx, params, [random_grads(params, seed) for seed in range(2)])
  for step in updates:
    for path, update in flat(step).items():
      assert bool(jnp.all(update == 0)) != train(path), path
  n_trained = sum(x.size for p, x in flat(params).items() if train(p))
  adam_state = sum(x.size for x in jax.tree.leaves(tx.init(params)) if x.ndim)
  assert adam_state == 2 * n_trained


def test_steps_from_each_unit():
  kw = dict(steps_per_epoch=100, batch_size=64)
  assert optim.steps_from({'total_steps': 1234}, **kw) == 1234
  assert optim.steps_from({'total_examples': 6400}, **kw) == 100
  assert optim.steps_from({'total_examples': 6401}, **kw) == 101
  assert optim.steps_from({'total_epochs': 210}, **kw) == 21_000
  assert optim.steps_from({'total_epochs': 0.504}, **kw) == 50
  config = ml_collections.ConfigDict({'warmup_steps': 500, 'warmup_epochs': None})
  assert optim.steps_from(config, prefix='warmup', **kw) == 500


def test_steps_from_needs_exactly_one_unit():
  kw = dict(steps_per_epoch=100, batch_size=64)
  with pytest.raises(ValueError, match='one of total_steps, total_examples, total_epochs; none'):
    optim.steps_from({'total_steps': None}, **kw)
  with pytest.raises(ValueError, match='total_steps=10, total_epochs=2'):
    optim.steps_from({'total_steps': 10, 'total_epochs': 2}, **kw)
  with pytest.raises(ValueError, match='whole number'):
    optim.steps_from({'total_steps': 2.5}, **kw)
