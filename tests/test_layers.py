"""Backbone layers: the patch embedding as a matmul, the kernels a model computes with and how
they are chosen for a device."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SMALL_IMAGE, tiny_config
from vitpose_jax import backend, models
from vitpose_jax.models.vit import PatchEmbed


@pytest.mark.parametrize('image_size, patch, padding', [
    ((256, 192), 16, 2),  # ViTPose: every pixel inside a whole patch
    ((70, 50), 16, 2),    # pixels past the last whole patch are dropped, as by the convolution
    ((56, 56), 14, 0),
    ((33, 31), 8, 3),
])
def test_patch_embed_matmul_equals_the_convolution(image_size, patch, padding):
  embed = PatchEmbed(24, patch, padding, jnp.float32, nnx.Rngs(0))
  embed.proj.bias[...] = jax.random.normal(jax.random.key(2), (24,))
  images = jax.random.normal(jax.random.key(1), (2, *image_size, 3))
  want = embed.proj(images)  # the convolution whose weights the matmul uses
  got = embed(images)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The weight gradients agree too: the reason for the matmul form is its backward.
  graphdef, state = nnx.split(embed)

  def loss(state, conv):
    module = nnx.merge(graphdef, state)
    return jnp.sum(jnp.sin(module.proj(images) if conv else module(images)))

  g_matmul, g_conv = (jax.grad(loss)(state, conv) for conv in (False, True))
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(g_matmul['proj'][name][...], g_conv['proj'][name][...],
                               rtol=1e-4, atol=1e-4)


def test_unknown_attention_is_a_config_error():
  with pytest.raises(models.ModelConfigError, match="attention 'flash' is not one of"):
    tiny_config(attention='flash')


def fake_device(platform, capability=None):
  """What the resolver reads of a jax.Device: its platform and, for GPUs, compute capability."""
  return SimpleNamespace(platform=platform, compute_capability=capability)


H200, V100, CPU = fake_device('gpu', '9.0'), fake_device('gpu', '7.0'), fake_device('cpu')


def test_auto_takes_cudnn_only_where_it_applies():
  # nano: width 32, 2 heads, so head width 16; micro: 96 / 3 = 32; 'S' (384 / 12) = 32.
  bf16 = tiny_config(dtype='bfloat16')
  assert backend.resolve_kernels(bf16, H200) == models.Kernels('cudnn', joined_mlp_kernels=True)
  assert backend.resolve_kernels(bf16.replace(dtype='float16'), H200).attention == 'cudnn'
  for config, device in [(bf16, CPU), (bf16, V100), (tiny_config(), H200),
                         (bf16.replace(width=36, num_heads=3), H200),  # head width 12
                         (bf16.replace(width=288, num_heads=1), H200)]:  # head width 288
    assert backend.resolve_kernels(config, device).attention == 'xla', (config.dtype, device)


def test_the_mlp_form_follows_the_platform():
  assert not backend.resolve_kernels(tiny_config(), CPU).joined_mlp_kernels
  assert backend.resolve_kernels(tiny_config(), V100).joined_mlp_kernels
  assert backend.resolve_kernels(tiny_config(), fake_device('tpu')).joined_mlp_kernels


def test_explicit_attention_is_kept_or_refused_where_it_cannot_run():
  assert backend.resolve_kernels(tiny_config(attention='xla', dtype='bfloat16'),
                                 H200).attention == 'xla'
  assert backend.resolve_kernels(tiny_config(attention='cudnn', dtype='bfloat16'),
                                 H200).attention == 'cudnn'
  with pytest.raises(models.ModelConfigError, match=r"attention 'cudnn' does not run on cpu.*"
                                                    r"use 'auto' or 'xla'"):
    backend.resolve_kernels(tiny_config(attention='cudnn', dtype='bfloat16'), CPU)


def test_this_hosts_devices_resolve():
  device = jax.devices()[0]
  kernels = backend.resolve_kernels(tiny_config(), device)
  assert kernels.joined_mlp_kernels == (device.platform != 'cpu')


def test_tracing_does_not_look_at_the_host(monkeypatch):
  # A model traces to the same program wherever it is traced: nothing under models/ may ask
  # which devices there are.
  def refuse(*args, **kwargs):
    raise AssertionError('the model looked at the host')

  model = models.create_model(tiny_config(), kernels=models.Kernels('xla', True))
  monkeypatch.setattr(jax, 'devices', refuse)
  monkeypatch.setattr(jax, 'default_backend', refuse)
  images = jnp.zeros((1, *SMALL_IMAGE, 3))
  graphdef, state = nnx.split(model)
  jax.jit(lambda s, x: nnx.merge(graphdef, s)({'coco': x})[0]['coco']).lower(state, images)


def test_the_kernels_are_the_models_and_with_kernels_shares_the_weights():
  model = models.create_model(tiny_config())
  assert model.kernels == models.Kernels()  # runs on every backend
  assert models.with_kernels(model, models.Kernels()) is model
  other = models.with_kernels(model, models.Kernels('cudnn', joined_mlp_kernels=True))
  assert other.kernels.attention == 'cudnn'
  assert other.backbone.blocks[0].attn.implementation == 'cudnn'
  assert other.backbone.blocks[0].mlp.joined_kernels
  assert other.backbone.pos_embed[...] is model.backbone.pos_embed[...]
  with pytest.raises(ValueError, match="attention kernel 'flash' is not one of"):
    models.Kernels('flash')


@pytest.mark.parametrize('attention', ['xla', 'cudnn'])
def test_the_attention_kernel_chosen_is_the_one_called(attention, monkeypatch):
  # cuDNN's kernel runs (and even lowers) only with CUDA: on any host, check that each block
  # asks jax.nn.dot_product_attention for the chosen kernel, XLA computing the answer here.
  calls, attend = [], jax.nn.dot_product_attention

  def spy(q, k, v, *, implementation=None):
    calls.append(implementation)
    return attend(q, k, v, implementation='xla')

  monkeypatch.setattr(jax.nn, 'dot_product_attention', spy)
  config = tiny_config(dtype='bfloat16')
  model = models.create_model(config, kernels=models.Kernels(attention))
  model({'coco': jnp.zeros((1, *SMALL_IMAGE, 3))})
  assert calls == [attention] * config.depth


@pytest.mark.skipif(not any(backend.cudnn_attention_applies(tiny_config(dtype='bfloat16'), d)
                            for d in jax.devices()),
                    reason="needs a GPU where cuDNN's fused attention runs")
def test_both_attention_kernels_compute_the_same_heatmaps():
  config = tiny_config(dtype='bfloat16')
  model = models.create_model(config)
  images = jax.random.normal(jax.random.key(0), (4, *SMALL_IMAGE, 3))
  out = {}
  for attention in ('xla', 'cudnn'):
    net = models.with_kernels(model, models.Kernels(attention, joined_mlp_kernels=True))
    out[attention] = np.asarray(net({'coco': images})[0]['coco'], np.float32)
  np.testing.assert_allclose(out['cudnn'], out['xla'], atol=2e-2)


def test_model_json_round_trips_attention(tmp_path):
  tiny_config(attention='xla').save(tmp_path / 'model.json')
  assert models.ModelConfig.load(tmp_path).attention == 'xla'


def test_model_json_without_attention_means_auto():
  # model.json files written before the setting existed load with the default.
  data = json.loads(tiny_config().to_json())
  del data['attention']
  assert models.ModelConfig.from_dict(data).attention == 'auto'


def test_gelu_is_the_exact_erf_form():
  from vitpose_jax.models.vit import gelu

  x = jnp.linspace(-12.0, 12.0, 4001)
  np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
  grads = [jax.vmap(jax.grad(f))(x) for f in (gelu, lambda v: jax.nn.gelu(v, approximate=False))]
  np.testing.assert_allclose(grads[0], grads[1], atol=2e-6)
  assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize('joined_kernels', [False, True])
def test_both_factorized_mlp_forms_equal_running_every_expert_and_masking(joined_kernels):
  from vitpose_jax.models.vit import FactorizedMlp, gelu

  width, hidden, p = 16, 32, 4
  mlp = FactorizedMlp(width, hidden, p, 3, jnp.float32, nnx.Rngs(0), joined_kernels)
  for i, expert in enumerate(mlp.experts):
    expert.bias[...] = jax.random.normal(jax.random.key(10 + i), (p,))
  x = jax.random.normal(jax.random.key(1), (6, 5, width))
  segments = ((0, 1, 2), (1, 3, 0), (4, 2, 1))  # unequal shares, experts out of order
  owner = jnp.array([2, 0, 0, 0, 1, 1])

  def official(mlp):
    # The reference's form: every expert on every sample, each sample keeps its task's.
    h = gelu(mlp.fc1(x))
    every = jnp.stack([e(h) for e in mlp.experts])
    mine = every[owner, jnp.arange(x.shape[0])]
    return jnp.concatenate([mlp.fc2(h), mine], axis=-1)

  np.testing.assert_allclose(mlp(x, segments), official(mlp), atol=1e-5)
  graphdef, state = nnx.split(mlp)

  def loss(state, ours):
    module = nnx.merge(graphdef, state)
    y = module(x, segments) if ours else official(module)
    return jnp.sum(jnp.sin(y))

  g_ours, g_official = (jax.grad(loss)(state, ours) for ours in (True, False))
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_official)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
