"""Parity with a PyTorch transcription of Sapiens' pose network (interop extra): the backbone
without a cls slot in its position embedding, and the 'sapiens' head.

The transcription (tests/sapiens_torch.py) carries Sapiens' own state-dict names; its random
weights (every tensor, the position embedding included) reach our model through the importer
(``official.sapiens_to_official`` + ``official.to_model``), as a Sapiens checkpoint's would.
"""

import time

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sapiens_torch
from conftest import require_extra
from vitpose_jax import models, skeletons
from vitpose_jax.interop import official
from vitpose_jax.models import ModelConfig, TaskSpec

WIDTH, DEPTH, HEADS, CHANNELS = 64, 2, 4, 48
IMAGE = (64, 48)
TASKS = {'coco': 'coco17', 'goliath': 'goliath308'}


def _config():
  return ModelConfig(
      tasks=tuple(TaskSpec(name, skeletons.get(schema), head='sapiens')
                  for name, schema in TASKS.items()),
      width=WIDTH, depth=DEPTH, num_heads=HEADS, image_size=IMAGE, deconv_channels=CHANNELS,
      pos_embed_cls_slot=False, attention='xla')


def _imported(torch, network, **options) -> official.Imported:
  """``network``'s weights through the importer, in memory."""
  sd = {name: t.detach().numpy() for name, t in network.state_dict().items()}
  return official.to_model(official.sapiens_to_official(sd), origin='transcription',
                           fmt='sapiens', **options)


def _max_delta(torch, network, imported, task, pixels):
  want = sapiens_torch.heatmaps(torch, network, pixels)
  # One compiled program: op-by-op dispatch compiles each operation apart, ~6× slower here.
  got = nnx.jit(lambda model, x: model({task: x})[0][task])(imported.model, jnp.asarray(pixels))
  assert got.shape == want.shape == (len(pixels), *imported.config.heatmap_size,
                                     imported.config.task(task).num_keypoints)
  return float(np.abs(np.asarray(got) - want).max()), float(want.std())


@pytest.mark.parametrize('task', list(TASKS))
def test_imported_sapiens_matches_the_torch_transcription(task):
  torch = require_extra('torch')
  keypoints = skeletons.get(TASKS[task]).num_keypoints
  network = sapiens_torch.randomize(torch, sapiens_torch.sapiens(
      torch, width=WIDTH, depth=DEPTH, heads=HEADS, channels=CHANNELS, keypoints=keypoints,
      image_size=IMAGE), seed=keypoints)
  imported = _imported(torch, network, num_heads=HEADS, src_image_size=IMAGE)
  config = imported.config
  assert (config.task_names, config.tasks[0].head, config.pos_embed_cls_slot) == (
      (task,), 'sapiens', False)
  assert imported.model.backbone.pos_embed[...].shape == (1, config.num_patches, WIDTH)
  pixels = np.random.default_rng(0).standard_normal((2, *IMAGE, 3)).astype(np.float32)
  with torch.no_grad():
    fmap = network.backbone(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).numpy()
  _, aux = imported.model({task: jnp.asarray(pixels)})
  np.testing.assert_allclose(np.asarray(aux[task]['feature_map']), fmap.transpose(0, 2, 3, 1),
                             atol=1e-5, rtol=0)
  delta, std = _max_delta(torch, network, imported, task, pixels)
  print(f'{task} K={keypoints}: max |Δ| = {delta:.2e} (heatmaps of std {std:.2f})')
  assert delta < 1e-4, (task, delta)


@pytest.mark.slow
def test_sapiens_03b_geometry_matches_the_torch_transcription():
  """Width 1024, depth 24, 16 heads (from the published-size table), deconv 768, K=17, at
  256×192: one image."""
  torch = require_extra('torch')
  start = time.perf_counter()
  network = sapiens_torch.randomize(torch, sapiens_torch.sapiens(
      torch, width=1024, depth=24, heads=16, channels=768, keypoints=17,
      image_size=(256, 192)), seed=3)
  imported = _imported(torch, network, src_image_size=(256, 192))
  assert (imported.config.num_heads, imported.config.deconv_channels) == (16, 768)
  assert '16 attention heads (the published models of width 1024)' in imported.notes
  pixels = np.random.default_rng(3).standard_normal((1, 256, 192, 3)).astype(np.float32)
  delta, std = _max_delta(torch, network, imported, 'coco', pixels)
  print(f'0.3B geometry K=17: max |Δ| = {delta:.2e} (heatmaps of std {std:.2f}), '
        f'{time.perf_counter() - start:.0f} s')
  assert delta < 1e-4, delta


def test_instance_norm_matches_torch():
  torch = require_extra('torch')
  from vitpose_jax.models.heads import instance_norm
  x = 3.0 + 2.0 * np.random.default_rng(1).standard_normal((2, 5, 4, 6)).astype(np.float32)
  want = torch.nn.InstanceNorm2d(6)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(np.asarray(instance_norm(jnp.asarray(x))),
                             want.transpose(0, 2, 3, 1), atol=1e-5, rtol=1e-5)


def test_sapiens_head_is_the_same_in_training_and_inference():
  """InstanceNorm keeps no batch statistics: train=True changes nothing."""
  from vitpose_jax.models.heads import SapiensDecoder
  head = SapiensDecoder(WIDTH, 17, channels=CHANNELS, rngs=nnx.Rngs(0))
  fmap = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 3, WIDTH)), jnp.float32)
  run = nnx.jit(lambda head, x, train: head(x, train=train), static_argnums=2)
  np.testing.assert_array_equal(np.asarray(run(head, fmap, True)),
                                np.asarray(run(head, fmap, False)))


@pytest.mark.parametrize('cls_slot', [True, False])
def test_position_embedding_layout_and_model_json(tmp_path, cls_slot):
  config = _config().replace(pos_embed_cls_slot=cls_slot)
  model = models.create_model(config)
  assert model.backbone.pos_embed[...].shape == (1, config.num_patches + cls_slot, WIDTH)
  config.save(tmp_path / 'model.json')
  data = config.to_dict()
  # Written only when it departs from the default, so cls-slot models' files are as before.
  assert ('pos_embed_cls_slot' in data) == (not cls_slot)
  assert ModelConfig.load(tmp_path) == config
  assert config.differences(ModelConfig.load(tmp_path)) == []


def test_weights_do_not_move_between_the_two_position_embedding_layouts():
  sapiens = models.create_model(_config())
  vitpose = models.create_model(_config().replace(pos_embed_cls_slot=True))
  with pytest.raises(models.ModelConfigError, match=r'backbone\.pos_embed has shape'):
    models.init_from(vitpose, sapiens)
  factorized = _config().replace(expert_dim=16, num_experts=2, tasks=tuple(
      TaskSpec(t.name, t.schema, expert=i, head=t.head) for i, t in enumerate(_config().tasks)))
  with pytest.raises(models.ModelConfigError, match='pos_embed_cls_slot: False vs True'):
    models.factorize(sapiens, factorized.replace(pos_embed_cls_slot=True))
