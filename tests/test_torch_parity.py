"""Parity with PyTorch on the operations whose conventions differ between frameworks (interop
extra): transposed convolutions, BatchNorm, bilinear upsampling, exact GELU, LayerNorm."""

import numpy as np
import jax.numpy as jnp
from flax import nnx

from conftest import require_extra
from vitpose_jax.models.heads import ClassicDecoder, SimpleDecoder


def _nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def test_classic_decoder_matches_torch_deconv_bn_relu_and_final_conv():
  torch = require_extra('torch')
  rng = np.random.default_rng(0)
  c_in, ch, k = 12, 8, 5
  ours = ClassicDecoder(c_in, k, channels=ch, num_layers=2, rngs=nnx.Rngs(0))
  layers = []
  for i in range(2):
    deconv = torch.nn.ConvTranspose2d(c_in if i == 0 else ch, ch, 4, stride=2, padding=1,
                                      output_padding=0, bias=False)
    bn = torch.nn.BatchNorm2d(ch)
    with torch.no_grad():
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_()
      bn.running_mean.normal_()
      bn.running_var.uniform_(0.5, 1.5)
    layers += [deconv, bn, torch.nn.ReLU()]
    # torch (in, out, kh, kw) → flax transpose_kernel layout (kh, kw, out, in), no flip.
    kernel = deconv.weight.detach().numpy().transpose(2, 3, 1, 0)
    ours.deconv_layers[i].kernel[...] = jnp.asarray(kernel)
    norm = ours.deconv_norms[i]
    norm.scale[...] = jnp.asarray(bn.weight.detach().numpy())
    norm.bias[...] = jnp.asarray(bn.bias.detach().numpy())
    norm.mean[...] = jnp.asarray(bn.running_mean.numpy())
    norm.var[...] = jnp.asarray(bn.running_var.numpy())
  final = torch.nn.Conv2d(ch, k, 1)
  ours.final_layer.kernel[...] = jnp.asarray(final.weight.detach().numpy().transpose(2, 3, 1, 0))
  ours.final_layer.bias[...] = jnp.asarray(final.bias.detach().numpy())
  reference = torch.nn.Sequential(*layers, final).eval()
  x = rng.standard_normal((2, 4, 3, c_in)).astype(np.float32)
  want = reference(torch.from_numpy(_nchw(x))).detach().numpy()
  got = _nchw(ours(jnp.asarray(x)))
  assert got.shape == want.shape == (2, k, 16, 12)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_simple_decoder_matches_torch_relu_bilinear_align_corners_false_conv3x3():
  torch = require_extra('torch')
  rng = np.random.default_rng(1)
  c_in, k = 6, 4
  ours = SimpleDecoder(c_in, k, rngs=nnx.Rngs(0))
  conv = torch.nn.Conv2d(c_in, k, 3, padding=1)
  ours.final_layer.kernel[...] = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
  ours.final_layer.bias[...] = jnp.asarray(conv.bias.detach().numpy())
  x = rng.standard_normal((2, 4, 3, c_in)).astype(np.float32)
  up = torch.nn.functional.interpolate(torch.relu(torch.from_numpy(_nchw(x))), scale_factor=4,
                                       mode='bilinear', align_corners=False)
  want = conv(up).detach().numpy()
  np.testing.assert_allclose(_nchw(ours(jnp.asarray(x))), want, atol=1e-5, rtol=1e-4)


def test_backbone_matches_a_torch_transcription_of_the_official_vit():
  """The official ViTPose backbone (mmpose/models/backbones/vit.py semantics) in torch ops, on our
  weights: patch conv with padding 2, cls-slot position embedding, pre-norm blocks with the
  (3, heads, head_dim) qkv layout, exact GELU, LayerNorm eps 1e-6, final norm."""
  torch = require_extra('torch')
  F = torch.nn.functional
  from conftest import randomize, tiny_config
  from vitpose_jax import models

  model = randomize(models.create_model(tiny_config(tasks={'coco': 'coco17'}, factorized=False)))
  cfg = model.config
  p = nnx.to_pure_dict(nnx.state(model))['backbone']
  t = lambda a: torch.from_numpy(np.array(a))
  lin = lambda x, d: x @ t(d['kernel']) + t(d['bias'])
  norm = lambda x, d: F.layer_norm(x, (cfg.width,), t(d['scale']), t(d['bias']), eps=1e-6)
  x = np.random.default_rng(2).standard_normal((2, *cfg.image_size, 3)).astype(np.float32)
  w = t(p['patch_embed']['proj']['kernel']).permute(3, 2, 0, 1)
  h = F.conv2d(t(_nchw(x)), w, t(p['patch_embed']['proj']['bias']), stride=16, padding=2)
  h = h.flatten(2).transpose(1, 2)
  pos = t(p['pos_embed'])
  h = h + pos[:, 1:] + pos[:, :1]
  heads = cfg.num_heads
  for blk in p['blocks'].values():
    y = norm(h, blk['norm1'])
    b, n, c = y.shape
    qkv = lin(y, blk['attn']['qkv']).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    h = h + lin((attn @ v).transpose(1, 2).reshape(b, n, c), blk['attn']['proj'])
    y = F.gelu(lin(norm(h, blk['norm2']), blk['mlp']['fc1']))
    h = h + lin(y, blk['mlp']['fc2'])
  want = norm(h, p['last_norm']).numpy()
  got = model.backbone(jnp.asarray(x), [(0, 2, 0)])
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)
