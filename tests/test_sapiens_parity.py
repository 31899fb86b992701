"""Parity with a PyTorch transcription of Sapiens' pose network (interop extra): the backbone
without a cls slot in its position embedding, and the 'sapiens' head.

The transcription follows facebookresearch/sapiens, written here from its facts rather than
copied: mmpretrain's VisionTransformer as the sapiens_pose configs build it (``with_cls_token=
False``, ``patch_cfg=dict(padding=2)``, qkv bias, ``final_norm=True``, LayerNorm eps 1e-6, no
pre-norm after the patch embedding so the patch conv has a bias): patch conv k16 s16 p2, plus a
(1, rows·cols, C) position embedding, pre-norm blocks (qkv laid out (3, heads, head_dim), exact
GELU MLP of ratio 4), final LayerNorm; and mmpose's HeatmapHead with ``use_silu``:
ConvTranspose2d(k4, s2, p1, no bias) → InstanceNorm2d → SiLU, twice, then Conv2d 1×1 →
InstanceNorm2d → SiLU, twice, then a 1×1 conv to K. Every tensor is random; a small mapping
below copies them into our model (the checkpoint importer is separate).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import require_extra
from vitpose_jax import models, skeletons
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


def _torch_sapiens(torch, num_patches, keypoints):
  """Sapiens' backbone and one head per K in ``keypoints``, in torch (NCHW)."""
  nn, F = torch.nn, torch.nn.functional

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln1, self.ln2 = nn.LayerNorm(WIDTH, eps=1e-6), nn.LayerNorm(WIDTH, eps=1e-6)
      self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
      self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

    def forward(self, x):
      b, n, c = x.shape
      qkv = self.qkv(self.ln1(x)).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
      x = x + self.proj(y.transpose(1, 2).reshape(b, n, c))
      return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

  class Backbone(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch = nn.Conv2d(3, WIDTH, 16, stride=16, padding=2)
      self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, WIDTH))
      self.layers = nn.ModuleList([Block() for _ in range(DEPTH)])
      self.ln_final = nn.LayerNorm(WIDTH, eps=1e-6)

    def forward(self, images):
      x = self.patch(images)
      n, c, rows, cols = x.shape
      x = x.flatten(2).transpose(1, 2) + self.pos_embed
      for layer in self.layers:
        x = layer(x)
      return self.ln_final(x).transpose(1, 2).reshape(n, c, rows, cols)

  def head(k):
    layers = []
    for i in range(2):
      layers += [nn.ConvTranspose2d(WIDTH if i == 0 else CHANNELS, CHANNELS, 4, stride=2,
                                    padding=1, output_padding=0, bias=False),
                 nn.InstanceNorm2d(CHANNELS), nn.SiLU()]
    for _ in range(2):
      layers += [nn.Conv2d(CHANNELS, CHANNELS, 1), nn.InstanceNorm2d(CHANNELS), nn.SiLU()]
    return nn.Sequential(*layers, nn.Conv2d(CHANNELS, k, 1))

  return Backbone(), [head(k) for k in keypoints]


def _randomize(torch, module, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      # LayerNorm scales near 1, everything else N(0, 0.2²): outputs of a realistic magnitude.
      p.copy_(1.0 + 0.2 * noise if name.endswith('weight') and p.ndim == 1 else 0.2 * noise)


def _load_into(ours: models.VitPose, backbone, heads):
  """The mapping torch → ours: (out, in) linears transposed, convs (out, in, kh, kw) →
  (kh, kw, in, out), transposed convs (in, out, kh, kw) → (kh, kw, out, in)."""
  a = lambda t: t.detach().numpy()

  def put(variable, value):
    # ``ours`` may be abstract (shapes only): every weight is set here, and its shape checked.
    assert variable.get_value().shape == value.shape, (variable.get_value().shape, value.shape)
    variable.set_value(jnp.asarray(value))

  def linear(dst, src):
    put(dst.kernel, a(src.weight).T)
    put(dst.bias, a(src.bias))

  def norm(dst, src):
    put(dst.scale, a(src.weight))
    put(dst.bias, a(src.bias))

  def conv(dst, src):
    put(dst.kernel, a(src.weight).transpose(2, 3, 1, 0))
    put(dst.bias, a(src.bias))

  vit = ours.backbone
  conv(vit.patch_embed.proj, backbone.patch)
  put(vit.pos_embed, a(backbone.pos_embed))
  for dst, src in zip(vit.blocks, backbone.layers):
    norm(dst.norm1, src.ln1)
    norm(dst.norm2, src.ln2)
    linear(dst.attn.qkv, src.qkv)
    linear(dst.attn.proj, src.proj)
    linear(dst.mlp.fc1, src.fc1)
    linear(dst.mlp.fc2, src.fc2)
  norm(vit.last_norm, backbone.ln_final)
  for name, head in zip(TASKS, heads):
    dst = ours.heads[name]
    for i, layer in enumerate(dst.deconv_layers):
      put(layer.kernel, a(head[3 * i].weight).transpose(2, 3, 1, 0))
    for i, layer in enumerate(dst.conv_layers):
      conv(layer, head[3 * (len(dst.deconv_layers) + i)])
    conv(dst.final_layer, head[-1])


def test_sapiens_backbone_and_head_match_a_torch_transcription():
  torch = require_extra('torch')
  config = _config()
  # Shapes only, then every weight from torch: no initialisation to wait for.
  ours = models.abstract_model(config)
  assert ours.backbone.pos_embed.get_value().shape == (1, config.num_patches, WIDTH)
  keypoints = [config.task(name).num_keypoints for name in TASKS]
  assert keypoints == [17, 308]
  backbone, heads = _torch_sapiens(torch, config.num_patches, keypoints)
  for seed, module in enumerate([backbone, *heads]):
    _randomize(torch, module, seed)
  _load_into(ours, backbone, heads)

  x = np.random.default_rng(0).standard_normal((2, *IMAGE, 3)).astype(np.float32)
  with torch.no_grad():
    fmap = backbone(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    want = {name: head(fmap).numpy().transpose(0, 2, 3, 1) for name, head in zip(TASKS, heads)}
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(nnx.state(ours)))
  # One compiled program: op-by-op dispatch compiles each operation apart, ~6× slower here.
  got, aux = nnx.jit(lambda model, images: model(images))(
      ours, {name: jnp.asarray(x) for name in TASKS})
  np.testing.assert_allclose(np.asarray(aux['coco']['feature_map']),
                             fmap.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)
  for name, k in zip(TASKS, keypoints):
    assert got[name].shape == want[name].shape == (2, *config.heatmap_size, k)
    delta = float(np.abs(np.asarray(got[name]) - want[name]).max())
    print(f'{name} K={k}: max |Δ| = {delta:.2e} (heatmaps of std {want[name].std():.2f})')
    assert delta < 1e-4, (name, delta)


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
