"""Backbone layers: the patch embedding as a matmul, the attention implementation setting."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from vitpose_jax import models
from vitpose_jax.models.vit import PatchEmbed, attention_implementation


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


@pytest.mark.parametrize('setting', ['xla', 'cudnn'])
def test_explicit_setting_is_kept(setting):
  assert attention_implementation(setting, jnp.float32, 64) == setting


def test_auto_takes_xla_without_a_recent_nvidia_gpu():
  # This machine has no GPU: every dtype and head width falls back to XLA's attention.
  for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
    for head_dim in (16, 64, 256):
      assert attention_implementation('auto', dtype, head_dim) == 'xla'


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
  mlp = FactorizedMlp(width, hidden, p, 3, jnp.float32, nnx.Rngs(0))
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

  np.testing.assert_allclose(mlp(x, segments, joined_kernels), official(mlp), atol=1e-5)
  graphdef, state = nnx.split(mlp)

  def loss(state, ours):
    module = nnx.merge(graphdef, state)
    y = module(x, segments, joined_kernels) if ours else official(module)
    return jnp.sum(jnp.sin(y))

  g_ours, g_official = (jax.grad(loss)(state, ours) for ours in (True, False))
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_official)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
