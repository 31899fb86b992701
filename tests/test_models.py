"""The factorized ViTPose: shapes, parameter counts, expert routing and cost, weight surgery,
model.json."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FOUR_TASKS, SMALL_IMAGE, randomize, tiny_config
from vitpose_jax import codec, models, skeletons
from vitpose_jax.data import transforms
from vitpose_jax.models import ModelConfig, ModelConfigError

COUNTS = {'coco': 2, 'wholebody': 1, 'infant': 3, 'wheelchair': 2}


def test_dense_vit_b_backbone_at_256x192_has_85794816_params():
  config = models.model_config('B', ['coco17'], factorized=False)
  assert config.grid_size == (16, 12) and config.heatmap_size == (64, 48)
  assert models.count_params(models.abstract_model(config), ('backbone',)) == 85_794_816


def test_factorized_vit_b_adds_one_expert_per_extra_task():
  dense = models.count_params(models.abstract_model(
      models.model_config('B', FOUR_TASKS, factorized=False)), ('backbone',))
  fact = models.count_params(models.abstract_model(
      models.model_config('B', FOUR_TASKS)), ('backbone',))
  # Three extra experts of (3072 × 192 + 192) in each of 12 blocks.
  assert fact - dense == 12 * 3 * (3072 * 192 + 192)


@pytest.mark.parametrize('decoder', models.DECODERS)
def test_output_shapes_per_task(decoder, images):
  model = models.create_model(tiny_config(decoder=decoder))
  heatmaps, aux = model(images(COUNTS))
  for task, schema in FOUR_TASKS.items():
    k = skeletons.get(schema).num_keypoints
    assert heatmaps[task].shape == (COUNTS[task], 16, 12, k)
    assert heatmaps[task].dtype == jnp.float32
    assert aux[task]['feature_map'].shape == (COUNTS[task], 4, 3, 32)
    assert aux[task]['patch_tokens'].shape == (COUNTS[task], 12, 32)


def test_a_batch_may_hold_any_subset_of_tasks_in_any_order(images):
  model = randomize(models.create_model(tiny_config()))
  batch = images(COUNTS)
  full, _ = model(batch)
  part, _ = model({'wheelchair': batch['wheelchair'], 'coco': batch['coco']})
  assert set(part) == {'coco', 'wheelchair'}
  for t in part:
    np.testing.assert_allclose(part[t], full[t], atol=1e-5)


def _dense_copy_with_expert(model, task):
  """A dense ViT built independently of dense_for_task: fc2 ← [shared fc2 ; expert] by hand."""
  spec = model.config.task(task)
  cfg = model.config.replace(tasks=(dataclasses.replace(spec, expert=0),), expert_dim=0,
                             num_experts=0)
  dense = models.create_model(cfg)
  src = nnx.to_pure_dict(nnx.state(model))
  dst = nnx.to_pure_dict(nnx.state(dense))
  for name in ('patch_embed', 'pos_embed', 'last_norm'):
    dst['backbone'][name] = src['backbone'][name]
  for i, block in src['backbone']['blocks'].items():
    out = dst['backbone']['blocks'][i]
    for name in ('norm1', 'attn', 'norm2'):
      out[name] = block[name]
    out['mlp']['fc1'] = block['mlp']['fc1']
    expert = block['mlp']['experts'][spec.expert]
    out['mlp']['fc2']['kernel'] = np.concatenate(
        [block['mlp']['fc2']['kernel'], expert['kernel']], axis=1)
    out['mlp']['fc2']['bias'] = np.concatenate([block['mlp']['fc2']['bias'], expert['bias']])
  dst['heads'][task] = src['heads'][task]
  state = nnx.state(dense)
  nnx.replace_by_pure_dict(state, dst)
  nnx.update(dense, state)
  return dense


@pytest.mark.parametrize('decoder', models.DECODERS)
def test_each_task_equals_a_dense_vit_whose_fc2_is_shared_plus_its_expert(decoder, images):
  model = randomize(models.create_model(tiny_config(decoder=decoder)))
  batch = images(COUNTS)
  heatmaps, _ = model(batch)
  for task in FOUR_TASKS:
    for dense in (_dense_copy_with_expert(model, task), models.dense_for_task(model, task)):
      assert not dense.config.factorized
      single, _ = dense({task: batch[task]})
      assert float(jnp.abs(heatmaps[task]).max()) > 1e-2  # a comparison of real signal
      np.testing.assert_allclose(single[task], heatmaps[task], atol=1e-5, rtol=1e-5)


def test_factorize_from_dense_reproduces_the_dense_model_for_every_task(images):
  dense = randomize(models.create_model(tiny_config(factorized=False)), seed=3)
  model = models.factorize(dense, tiny_config())
  assert model.config.factorized and model.config.num_experts == 4
  batch = images(COUNTS)
  want, _ = dense(batch)
  got, _ = model(batch)
  for task in FOUR_TASKS:
    np.testing.assert_allclose(got[task], want[task], atol=1e-5, rtol=1e-5)
  block = nnx.to_pure_dict(nnx.state(model))['backbone']['blocks'][0]['mlp']
  np.testing.assert_array_equal(block['experts'][0]['kernel'], block['experts'][3]['kernel'])


def test_factorize_rejects_mismatched_backbones():
  dense = models.create_model(tiny_config(factorized=False))
  with pytest.raises(ModelConfigError, match='width: 32 vs 96'):
    models.factorize(dense, models.model_config('micro', FOUR_TASKS, image_size=SMALL_IMAGE))


def test_each_task_runs_through_its_own_expert_only(images):
  model = randomize(models.create_model(tiny_config()))
  batch = images(COUNTS)
  before, _ = model(batch)
  infant_expert = model.config.task('infant').expert
  for block in model.backbone.blocks:
    kernel = block.mlp.experts[infant_expert].kernel
    kernel[...] = kernel[...] + 1.0
  after, _ = model(batch)
  for task in FOUR_TASKS:
    changed = not np.allclose(after[task], before[task])
    assert changed == (task == 'infant'), task


def _matmul_flops(jaxpr) -> int:
  """2·M·N·K summed over every dot_general in a jaxpr, nested jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      contracted = int(np.prod([lhs[d] for d in contract]))
      total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * contracted
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # a ClosedJaxpr wraps a Jaxpr
        if hasattr(sub, 'eqns'):
          total += _matmul_flops(sub)
  return total


def _backbone_matmul_flops(config, counts):
  graphdef, state = nnx.split(models.abstract_model(config))
  segments, start = [], 0
  for task, n in counts.items():
    segments.append((start, n, config.task(task).expert if config.factorized else 0))
    start += n
  x = jax.ShapeDtypeStruct((start, *config.image_size, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s).backbone(x, segments))(state, x)
  return _matmul_flops(jaxpr.jaxpr)


def test_experts_cost_one_expert_matmul_per_sample_not_all_experts():
  counts = {'coco': 4, 'wholebody': 4, 'infant': 4, 'wheelchair': 4}
  dense = _backbone_matmul_flops(tiny_config(factorized=False), counts)
  assert dense > 0
  assert _backbone_matmul_flops(tiny_config(), counts) == dense


def test_model_json_round_trips_with_builtin_and_user_schemas(tmp_path):
  user = skeletons.make_schema('paw3', ['left_paw', 'right_paw', 'tail'], [.05, .05, .1])
  tasks = models.make_tasks({'coco': 'coco17', 'pets': user})
  config = models.model_config('nano', tasks, image_size=(128, 96), decoder='simple',
                               dtype='bfloat16', remat=True)
  again = ModelConfig.from_json(config.to_json())
  assert again == config
  config.save(tmp_path / 'model.json')
  assert ModelConfig.load(tmp_path) == config
  data = config.to_dict()
  assert data['heatmap_size'] == [32, 24]
  assert data['tasks']['pets'] == {'schema': user.to_dict(), 'expert': 1, 'head': 'classic'}


def test_model_json_errors_name_the_file_and_field(tmp_path):
  data = tiny_config().to_dict()
  data['widht'] = 3
  with pytest.raises(ModelConfigError, match=r"run/model.json: unknown field\(s\) \['widht'\]"):
    ModelConfig.from_dict(data, source='run/model.json')
  data = tiny_config().to_dict()
  data['tasks']['infant']['expert'] = 9
  with pytest.raises(ModelConfigError, match="task 'infant': expert 9 is out of range for 4"):
    ModelConfig.from_dict(data)
  with pytest.raises(ModelConfigError, match='not found'):
    ModelConfig.load(tmp_path)


@pytest.mark.parametrize('field, value, wanted', [
    ('num_heads', 0, 'num_heads 0 must be a positive integer'),
    ('num_heads', -4, 'num_heads -4 must be a positive integer'),
    ('depth', 0, 'depth 0 must be a positive integer'),
    # The patches would not tile the input: the codec would stretch the heatmap over it.
    ('image_size', (250, 192), r'image_size \(250, 192\) must be a multiple of the patch size 16'),
    ('image_size', (256, 190), 'must be a multiple of the patch size 16 on each side'),
])
def test_impossible_geometries_are_refused(field, value, wanted):
  with pytest.raises(ModelConfigError, match=wanted):
    tiny_config().replace(**{field: value})


def test_uint8_pixels_are_normalised_by_the_model_floats_taken_as_normalised():
  model = randomize(models.create_model(tiny_config()))
  rng = np.random.default_rng(0)
  pixels = {t: rng.integers(0, 256, (n, *SMALL_IMAGE, 3), dtype=np.uint8)
            for t, n in COUNTS.items()}
  normalised = {t: (p.astype(np.float32) - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD
                for t, p in pixels.items()}
  want, _ = model(normalised)
  # Tasks may mix the two encodings in one batch.
  got, _ = model({**pixels, 'infant': normalised['infant']})
  for task in COUNTS:
    np.testing.assert_allclose(got[task], want[task], rtol=1e-5, atol=1e-5)


def test_bad_batches_are_clear_errors(images):
  model = models.create_model(tiny_config())
  with pytest.raises(ModelConfigError, match=r"unknown task\(s\) \['dogs'\]"):
    model(images({'dogs': 1}))
  with pytest.raises(ModelConfigError, match='batch holds no task'):
    model({})
  with pytest.raises(ModelConfigError, match=r"task 'coco': images must be \(n, 64, 48, 3\)"):
    model(images({'coco': 1}, size=(256, 192)))
  with pytest.raises(ModelConfigError, match='uint8 pixels or normalised floats, got int32'):
    model({'coco': jnp.zeros((1, *SMALL_IMAGE, 3), jnp.int32)})


def test_drop_path_trains_stochastically_and_needs_an_rng(images):
  model = randomize(models.create_model(tiny_config(drop_path=0.5)))
  batch = images({'coco': 4})
  with pytest.raises(ValueError, match='rng'):
    model(batch, train=True)
  a, _ = model(batch, train=True, rng=jax.random.key(0))
  b, _ = model(batch, train=True, rng=jax.random.key(1))
  assert not np.allclose(a['coco'], b['coco'])
  e1, _ = model(batch)
  e2, _ = model(batch)
  np.testing.assert_array_equal(e1['coco'], e2['coco'])


def test_train_mode_updates_batchnorm_statistics_and_eval_mode_does_not(images):
  model = models.create_model(tiny_config())
  stats = lambda: jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  before = [np.asarray(x) for x in stats()]
  model(images({'coco': 2}))
  assert all(np.array_equal(x, y) for x, y in zip(before, stats()))
  model(images({'coco': 2}), train=True)
  coco_changed = [not np.array_equal(x, y) for x, y in zip(before, stats())]
  assert any(coco_changed) and not all(coco_changed)  # only the coco head saw samples


def test_remat_changes_memory_not_results(images):
  batch = images({'coco': 2, 'infant': 1})
  outs = []
  for remat in (False, True):
    model = randomize(models.create_model(tiny_config(remat=remat, drop_path=0.2)))
    graphdef, state = nnx.split(model)

    def loss(state, graphdef=graphdef):
      heatmaps, _ = nnx.merge(graphdef, state)(batch, train=True, rng=jax.random.key(0))
      return sum(jnp.mean(h ** 2) for h in heatmaps.values())

    outs.append(jax.jit(jax.value_and_grad(loss))(state))
  (l0, g0), (l1, g1) = outs
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  for x, y in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_returns_float32_heatmaps_close_to_float32(images):
  batch = images({'coco': 2})
  f32 = randomize(models.create_model(tiny_config()))
  bf16 = models.create_model(tiny_config(dtype='bfloat16'))
  nnx.update(bf16, nnx.state(f32))
  want, _ = f32(batch)
  got, _ = bf16(batch)
  assert got['coco'].dtype == jnp.float32
  assert nnx.state(bf16, nnx.Param)['backbone']['pos_embed'][...].dtype == jnp.float32
  scale = float(jnp.abs(want['coco']).max())
  assert float(jnp.abs(got['coco'] - want['coco']).max()) < 0.05 * scale


def test_importing_the_package_does_no_jax_work():
  code = 'import sys, vitpose_jax, vitpose_jax.skeletons; print("jax" in sys.modules)'
  out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, text=True)
  assert out.stdout.strip() == 'False'


@pytest.mark.parametrize('shape', [(2, 4, 3, 5), (1, 6, 6, 2)])
def test_subpixel_deconv_equals_the_transposed_convolution_and_its_gradients(shape):
  from vitpose_jax.models.heads import Deconv4x2
  deconv = Deconv4x2(shape[-1], 3, rngs=nnx.Rngs(0))
  kernel = jax.random.normal(jax.random.key(1), (4, 4, 3, shape[-1]))
  x = jax.random.normal(jax.random.key(2), shape)
  cot = jax.random.normal(jax.random.key(3), (shape[0], 2 * shape[1], 2 * shape[2], 3))

  def reference(kernel, x):
    # torch ConvTranspose2d(k4, s2, p1) in lax terms: padding k − 1 − p = 2 per side.
    y = jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'), transpose_kernel=True)
    return jnp.sum(y * cot), y

  graphdef, _ = nnx.split(deconv)

  def ours(kernel, x):
    y = nnx.merge(graphdef, nnx.State({'kernel': nnx.Param(kernel)}))(x)
    return jnp.sum(y * cot), y

  (_, want), want_grads = jax.value_and_grad(reference, argnums=(0, 1), has_aux=True)(kernel, x)
  (_, got), got_grads = jax.value_and_grad(ours, argnums=(0, 1), has_aux=True)(kernel, x)
  np.testing.assert_allclose(got, want, atol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-4)


def _with_tokens(n, seed=0):
  base = tiny_config({"coco": "coco17", "infant": "infant_smil25"})
  return models.create_model(base.replace(num_knowledge_tokens=n), seed=seed)


def test_knowledge_tokens_off_is_bitwise_the_plain_model_and_on_changes_only_the_output(images):
  plain = models.create_model(tiny_config({"coco": "coco17", "infant": "infant_smil25"}))
  off, on = _with_tokens(0), _with_tokens(2)
  batch = images({'coco': 2, 'infant': 1})
  want, want_aux = plain(batch)
  got_off, _ = off(batch)
  got_on, aux_on = on(batch)
  plain_state = nnx.to_pure_dict(nnx.state(plain))
  on_state = nnx.to_pure_dict(nnx.state(on))
  # Tokens are made last: every other weight is the plain model's.
  assert set(on_state['backbone']) - set(plain_state['backbone']) == {'knowledge_tokens',
                                                                      'knowledge_pos'}
  for a, b in zip(jax.tree.leaves(plain_state), jax.tree.leaves(
      {**on_state, 'backbone': {k: v for k, v in on_state['backbone'].items()
                                if not k.startswith('knowledge')}})):
    np.testing.assert_array_equal(a, b)
  for t in want:
    np.testing.assert_array_equal(got_off[t], want[t])
    assert got_on[t].shape == want[t].shape
    assert aux_on[t]['patch_tokens'].shape == want_aux[t]['patch_tokens'].shape
    # Fresh heads give tiny heatmaps: compare relative to their size.
    assert np.abs(got_on[t] - want[t]).max() > 1e-3 * np.abs(want[t]).max()


def test_knowledge_tokens_can_come_from_outside_and_are_checked(images):
  model = _with_tokens(0)
  name = model.config.task_names[0]
  own = _with_tokens(3)
  tokens = own.knowledge_tokens()
  assert tokens[name].shape == (3, model.config.width)
  batch = images({name: 2})
  np.testing.assert_array_equal(model(batch, knowledge=tokens)[0][name], own(batch)[0][name])
  with pytest.raises(ModelConfigError, match=r'must be \(n, '):
    model(batch, knowledge={name: tokens[name][:, :4]})
  other = model.config.task_names[1]
  with pytest.raises(ModelConfigError, match='missing'):
    model(batch, knowledge={other: tokens[other]})


def test_dense_for_task_keeps_that_task_knowledge_tokens(images):
  model = randomize(_with_tokens(2, seed=4), seed=4)
  batch = images({'coco': 2, 'infant': 1})
  heatmaps, _ = model(batch)
  for task in ('coco', 'infant'):
    dense = models.dense_for_task(model, task)
    assert dense.config.num_knowledge_tokens == 2
    np.testing.assert_allclose(dense({task: batch[task]})[0][task], heatmaps[task], atol=1e-5,
                               rtol=1e-5)


def test_model_json_records_the_codec_and_reads_it_back(tmp_path):
  config = tiny_config(heatmap_sigma=3.0, blur_kernel_size=17)
  config.save(tmp_path / 'model.json')
  data = json.loads((tmp_path / 'model.json').read_text())
  assert data['codec'] == {'type': 'UDPHeatmap', 'input_size': [64, 48], 'heatmap_size': [16, 12],
                           'sigma': 3.0, 'blur_kernel_size': 17}
  loaded = ModelConfig.load(tmp_path)
  assert loaded == config
  assert loaded.codec == codec.UDPHeatmap((64, 48), (16, 12), sigma=3.0, blur_kernel_size=17)


def test_a_model_json_without_a_codec_gets_the_one_it_was_trained_with(tmp_path):
  data = json.loads(tiny_config().to_json())
  del data['codec']
  (tmp_path / 'model.json').write_text(json.dumps(data))
  # Before the codec was recorded every model decoded with kernel 11, and trained with the
  # run's data.sigma (2 unless the config said otherwise).
  assert ModelConfig.load(tmp_path).codec == codec.UDPHeatmap((64, 48), (16, 12), 2.0, 11)
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'sigma': 3.0}}))
  assert ModelConfig.load(tmp_path).codec == codec.UDPHeatmap((64, 48), (16, 12), 3.0, 11)
  # A model.json that records its codec keeps it, whatever the config beside it says.
  tiny_config().save(tmp_path / 'model.json')
  assert ModelConfig.load(tmp_path).codec.sigma == 2.0
  # The shipped model predates the record: ViTPose's codec at its own sizes.
  shipped = ModelConfig.load('zoo:micro-adult')
  assert shipped.codec == codec.UDPHeatmap(shipped.image_size, shipped.heatmap_size, 2.0, 11)


def test_model_json_codec_errors_name_the_field(tmp_path):
  data = json.loads(tiny_config().to_json())
  for change, message in [
      ({'heatmap_size': [32, 24]},
       r"codec\.heatmap_size \[32, 24\] is not the network's \[16, 12\]"),
      ({'type': 'MSRAHeatmap'}, r"codec type 'MSRAHeatmap' is not UDPHeatmap"),
      ({'sigma': 0}, r'codec sigma 0 is not a positive number'),
      ({'blur_kernel_size': 10}, r'codec blur_kernel_size 10 is not an odd positive integer'),
      ({'radius': 3}, r"codec: unknown field\(s\) \['radius'\]")]:
    bad = {**data, 'codec': {**data['codec'], **change}}
    with pytest.raises(ModelConfigError, match=r'run/model\.json: ' + message):
      ModelConfig.from_dict(bad, source='run/model.json')
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'sigma': 'wide'}}))
  del data['codec']
  (tmp_path / 'model.json').write_text(json.dumps(data))
  with pytest.raises(ModelConfigError, match=r"config\.json: data\.sigma 'wide' is not a number"):
    ModelConfig.load(tmp_path)


def test_training_records_the_sigma_it_trains_with():
  from vitpose_jax import configlib, train

  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'multitask.py')
  config = configlib.sibling_config(path, 'multitask').get_config(
      'runlocal,variant=nano,tasks=coco')
  assert train.model_config_from_training(config).codec.sigma == config.data.sigma == 2.0
  with config.unlocked():
    config.data.sigma = 3.0
  assert train.model_config_from_training(config).codec.sigma == 3.0
