"""The ViT backbone with ViTPose++'s knowledge-factorized MLP (docs/design.md).

Shapes: images are (N, H, W, 3) channels-last; tokens (N, L, C) with L = rows × cols patch tokens in
row-major order. A batch may hold several tasks' samples back to back; ``segments`` names them as
static (start, count, expert) triples so each sample's expert is applied to it alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vitpose_jax.models.config import ModelConfig

# (start, count, expert index): a contiguous run of samples that share an expert.
Segment = tuple[int, int, int]

_trunc_normal = jax.nn.initializers.truncated_normal(0.02)


def sincos_position_table(rows: int, cols: int, width: int) -> np.ndarray:
  """MAE's fixed 2-D sin-cos table, (1, 1 + rows·cols, width) with a zero cls slot: the first
  half of the channels encodes the column, the second half the row (MAE's
  ``get_2d_sincos_pos_embed``). Channels beyond the largest multiple of 4 are zero."""
  quarter = width // 4
  omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / max(quarter, 1))

  def encode(pos):
    out = np.outer(pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing='ij')
  table = np.zeros((1 + rows * cols, width))
  table[1:, :4 * quarter] = np.concatenate([encode(c.ravel()), encode(r.ravel())], axis=1)
  return table[None].astype(np.float32)


def _linear(din: int, dout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
  # timm/official ViT init: truncated normal (std .02) weights, zero bias.
  return nnx.Linear(din, dout, kernel_init=_trunc_normal, dtype=dtype, rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, written as torch writes it: x/2 · (1 + erf(x/√2)). jax.nn.gelu's exact
  form goes through erfc, which XLA:CPU lowers to a branchy kernel: ~2.5× slower on the MLP's
  hidden activations, within 1e-6 of this."""
  return x * 0.5 * (1.0 + jax.lax.erf(x * 0.7071067811865476))


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None, train: bool) -> jax.Array:
  """Stochastic depth: drops a whole residual branch per sample, rescaling the kept ones."""
  if not train or rate == 0.0:
    return x
  if rng is None:
    raise ValueError('drop_path > 0 in training needs an rng key: call the model with rng=...')
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


ATTENTION_KERNELS = ('xla', 'cudnn')


@dataclasses.dataclass(frozen=True)
class Kernels:
  """How the backbone computes, not what: each choice gives the same function (to rounding).

  ``attention``: the ``implementation`` of jax.nn.dot_product_attention, 'xla' (every backend) or
  'cudnn' (cuDNN's fused kernel: NVIDIA GPUs only). ``joined_mlp_kernels``: which form of the
  factorized MLP runs (see :class:`FactorizedMlp`). The defaults run on every backend; the
  choice for a device is made outside the model (:func:`vitpose_jax.backend.resolve_kernels`),
  so a model traces to the same program wherever it is traced.
  """

  attention: str = 'xla'
  joined_mlp_kernels: bool = False

  def __post_init__(self):
    if self.attention not in ATTENTION_KERNELS:
      raise ValueError(f'attention kernel {self.attention!r} is not one of {ATTENTION_KERNELS}')


class Attention(nnx.Module):
  def __init__(self, width: int, num_heads: int, dtype, rngs: nnx.Rngs, implementation='xla'):
    self.num_heads = num_heads
    self.implementation = implementation
    self.qkv = _linear(width, 3 * width, dtype, rngs)
    self.proj = _linear(width, width, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, length, c = x.shape
    head_dim = c // self.num_heads
    # The official qkv output is laid out (3, heads, head_dim): keep it so weights import as is.
    qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, head_dim)
    out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                       implementation=self.implementation)
    return self.proj(out.reshape(n, length, c))


class FactorizedMlp(nnx.Module):
  """fc1 shared; fc2 = [shared (C − P outputs) ; expert_i (P outputs)] for task i's samples.

  The official code and the HF port run every expert on every sample and mask the results; here
  each segment of the batch runs the shared fc2 and its own expert only: the FLOPs of a dense fc2
  however many tasks there are. Two equivalent forms, each the faster one where it was measured
  (ViTPose++-B, 4 tasks, training step, alternating rounds):
  - joined kernels: one matmul per segment with [fc2 | expert]'s kernels concatenated. Taken on
    accelerators (H200, bf16, batch 64: 29.4 ms vs 31.0 ms a step for the other form).
  - joined outputs: per segment, fc2 and the expert as two matmuls, their outputs joined along
    features. Taken on CPU, where XLA's standalone concatenate of the kernels cost ~250 ms a
    step (forward + backward 6.29 s vs 6.67 s; a plain MLP 6.33 s).
  ``expert_dim = 0`` is a plain dense MLP. ``joined_kernels`` picks the form.
  """

  def __init__(self, width: int, hidden: int, expert_dim: int, num_experts: int, dtype,
               rngs: nnx.Rngs, joined_kernels: bool = False):
    self.expert_dim = expert_dim
    self.joined_kernels = joined_kernels
    self.fc1 = _linear(width, hidden, dtype, rngs)
    self.fc2 = _linear(hidden, width - expert_dim, dtype, rngs)
    self.experts = nnx.List(
        [_linear(hidden, expert_dim, dtype, rngs) for _ in range(num_experts if expert_dim else 0)]
    )

  def __call__(self, x: jax.Array, segments: Sequence[Segment]) -> jax.Array:
    h = gelu(self.fc1(x))
    if not self.expert_dim:
      return self.fc2(h)
    outputs = []
    for start, count, e in segments:
      hs, expert = h[start:start + count], self.experts[e]
      if self.joined_kernels:
        kernel = jnp.concatenate([self.fc2.kernel[...], expert.kernel[...]], axis=1)
        bias = jnp.concatenate([self.fc2.bias[...], expert.bias[...]])
        outputs.append(hs @ kernel.astype(hs.dtype) + bias.astype(hs.dtype))
      else:
        outputs.append(jnp.concatenate([self.fc2(hs), expert(hs)], axis=-1))
    return jnp.concatenate(outputs, axis=0) if len(outputs) > 1 else outputs[0]


class Block(nnx.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  def __init__(self, config: ModelConfig, drop_path_rate: float, dtype, rngs: nnx.Rngs,
               kernels: Kernels):
    c = config.width
    self.drop_path_rate = drop_path_rate
    self.norm1 = nnx.LayerNorm(c, epsilon=config.eps, dtype=dtype, rngs=rngs)
    self.attn = Attention(c, config.num_heads, dtype, rngs, kernels.attention)
    self.norm2 = nnx.LayerNorm(c, epsilon=config.eps, dtype=dtype, rngs=rngs)
    self.mlp = FactorizedMlp(c, int(c * config.mlp_ratio), config.expert_dim, config.num_experts,
                             dtype, rngs, kernels.joined_mlp_kernels)

  def __call__(self, x, segments: Sequence[Segment], train: bool, rng: jax.Array | None):
    rng_attn, rng_mlp = (None, None) if rng is None else jax.random.split(rng)
    x = x + drop_path(self.attn(self.norm1(x)), self.drop_path_rate, rng_attn, train)
    return x + drop_path(self.mlp(self.norm2(x), segments), self.drop_path_rate, rng_mlp, train)


class PatchEmbed(nnx.Module):
  """The k×k stride-k convolution (zero padding ``padding``) that makes the patch tokens,
  computed as a patchify reshape and one matmul.

  The same function as the convolution, but its weight gradient is then a plain matmul: as a
  convolution's backward, XLA:GPU materialised a 16×-dilated gradient and ran a 20 ms cuDNN
  kernel per ViTPose-B step at batch 64 (over 40% of the step); on XLA:CPU the two forms
  measured the same. The weight keeps the convolution's (k, k, 3, C) layout, so checkpoints and
  importers are unchanged.
  """

  def __init__(self, width: int, patch: int, padding: int, dtype, rngs: nnx.Rngs):
    self.patch, self.padding, self.dtype = patch, padding, dtype
    self.proj = nnx.Conv(3, width, kernel_size=(patch, patch), strides=(patch, patch),
                         padding=((padding, padding), (padding, padding)), dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) → (N, rows, cols, C) as the padded convolution's output grid."""
    p, pad = self.patch, self.padding
    n, h, w, channels = images.shape
    rows, cols = (h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1
    x = jnp.pad(images.astype(self.dtype), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Pixels past the last whole patch (as the convolution's floor) are left out.
    x = x[:, :rows * p, :cols * p].reshape(n, rows, p, cols, p, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, rows, cols, p * p * channels)
    kernel = self.proj.kernel[...].reshape(p * p * channels, -1).astype(self.dtype)
    return x @ kernel + self.proj.bias[...].astype(self.dtype)


class ViT(nnx.Module):
  """Patch embedding (k16 s16, padding 2), position embedding, blocks, final LayerNorm.

  As in the official ViTPose, there is no cls token in the sequence: the position embedding has
  shape (1, L + 1, C) and its cls slot is added to every patch token. With
  ``config.pos_embed_cls_slot`` false (Sapiens) it has shape (1, L, C), one vector per patch.
  ``kernels``: see :class:`Kernels`.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, kernels: Kernels = Kernels()):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    c, p, pad = config.width, config.patch_size, config.patch_padding
    self.patch_embed = PatchEmbed(c, p, pad, dtype, rngs)
    # Learnable, initialised as MAE's fixed sin-cos table: the official recipe starts from MAE
    # weights, whose position embedding is that table. From random N(0, .02) init a small model
    # trained from scratch barely uses positions: patch features are ~50× larger.
    table = sincos_position_table(*config.grid_size, c)
    self.pos_embed = nnx.Param(jnp.asarray(table if config.pos_embed_cls_slot else table[:, 1:]))

    depth = config.depth
    rates = [config.drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    self.blocks = nnx.List([Block(config, rates[i], dtype, rngs, kernels) for i in range(depth)])
    self.last_norm = nnx.LayerNorm(c, epsilon=config.eps, dtype=dtype, rngs=rngs)

  def init_knowledge_tokens(self, rngs: nnx.Rngs):
    """Makes ``config.num_knowledge_tokens`` tokens per task (config.tasks order) and one
    position vector per token slot shared by the tasks. The pose model calls this after making
    every other weight, so that those init as in the same model without tokens."""
    cfg = self.config
    n, c = cfg.num_knowledge_tokens, cfg.width
    source = cfg.knowledge_source_width or c
    self.knowledge_tokens = nnx.Param(
        _trunc_normal(rngs.params(), (len(cfg.tasks), n, source)))
    self.knowledge_pos = nnx.Param(jnp.zeros((1, n, c)))
    self.knowledge_bridge = (_linear(source, c, jnp.float32, rngs) if source != c else None)

  def knowledge(self) -> jax.Array:
    """(tasks, n, width): the tokens (through the bridge, for a source of another width) plus
    their position vectors."""
    tokens = self.knowledge_tokens[...]
    if self.knowledge_bridge is not None:
      tokens = self.knowledge_bridge(tokens)
    return tokens + self.knowledge_pos[...]

  def __call__(self, images: jax.Array, segments: Sequence[Segment], *, train: bool = False,
               rng: jax.Array | None = None, extra_tokens: jax.Array | None = None) -> jax.Array:
    """(N, H, W, 3) → patch tokens (N, L, C) after the final LayerNorm.

    ``extra_tokens`` (N, n, C) join the sequence after the patch tokens (knowledge tokens,
    position already added), take part in every block, and are dropped from the output.
    """
    cfg = self.config
    x = self.patch_embed(images.astype(cfg.dtype))
    n, gh, gw, c = x.shape
    x = x.reshape(n, gh * gw, c)
    pos = self.pos_embed[...].astype(x.dtype)
    if cfg.pos_embed_cls_slot:
      x = x + pos[:, 1:] + pos[:, :1]
    else:
      x = x + pos
    if extra_tokens is not None:
      x = jnp.concatenate([x, extra_tokens.astype(x.dtype)], axis=1)
    keys = [None] * cfg.depth if rng is None else list(jax.random.split(rng, cfg.depth))
    segments = tuple(segments)

    def run_block(block, x, key):
      return block(x, segments, train, key)

    if cfg.remat:
      run_block = nnx.remat(run_block)
    for block, key in zip(self.blocks, keys):
      x = run_block(block, x, key)
    return self.last_norm(x[:, :gh * gw] if extra_tokens is not None else x)
