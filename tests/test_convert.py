"""Weight import (interop extra): random Hugging Face VitPose models with every parameter and
buffer randomised, and official mmpose-layout state dicts derived from them, must give the same
heatmaps after conversion for every dataset index; MAE backbones; task splitting; resampling."""

import json
import os

import numpy as np
import pytest

from conftest import require_extra
from vitpose_jax import checkpoint, convert, models, predict
from vitpose_jax.interop import official
from vitpose_jax.interop.resample import resample_pos_embed

IMAGE = (64, 48)
WIDTH, DEPTH, HEADS, EXPERTS, PART = 48, 2, 4, 3, 12


def _randomize_torch(module, seed):
  """Every float tensor of the state dict redrawn: weights ~ N(0, 1/fan_in), LayerNorm/BatchNorm
  scales ~ 1 + N(0, .2²), biases and running means ~ N(0, .2²), running variances ~ U(.5, 1.5)."""
  torch = require_extra('torch')
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      if not t.is_floating_point():
        continue
      if name.endswith('running_var'):
        t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
      elif t.ndim >= 2 and 'position' not in name:
        fan_in = t[0].numel() if 'deconv' not in name else t.shape[0] * 4
        t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)
      elif t.ndim == 1 and (name.endswith('.weight')):
        t.copy_(1 + 0.2 * torch.randn(t.shape, generator=gen))
      else:
        t.copy_(0.2 * torch.randn(t.shape, generator=gen))
  return module


def _hf_model(simple: bool, seed: int = 0, experts: int = EXPERTS):
  transformers = require_extra('transformers')
  backbone = transformers.VitPoseBackboneConfig(
      hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=list(IMAGE),
      num_experts=experts, part_features=PART, out_indices=[DEPTH], layer_norm_eps=1e-6)
  config = transformers.VitPoseConfig(backbone_config=backbone, use_simple_decoder=simple,
                                      num_labels=17)
  return _randomize_torch(transformers.VitPoseForPoseEstimation(config).eval(), seed)


def _hf_heatmaps(model, pixels, index):
  torch = require_extra('torch')
  x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    out = model(x, dataset_index=torch.full((len(pixels),), index))
  return out.heatmaps.numpy()


def _ours(run, task, pixels):
  """Our heatmaps in the official (B, K, h, w) layout."""
  model, _ = checkpoint.load_model(run)
  heatmaps, _ = model({task: pixels})
  return np.asarray(heatmaps[task]).transpose(0, 3, 1, 2)


def _pixels(n=2, seed=0):
  return np.random.default_rng(seed).standard_normal((n, *IMAGE, 3)).astype(np.float32)


def _convert(*args):
  assert convert.main([str(a) for a in args]) == 0


ALL_INDICES = ','.join(f't{i}={i}:coco17' for i in range(EXPERTS))


def _official_from_hf(hf_state, heads):
  """The mmpose layout written out independently of the converter: renamed keys, q/k/v fused
  into qkv, ``heads[0]`` as keypoint_head and ``heads[i]`` as associate_keypoint_heads.{i-1}."""
  torch = require_extra('torch')
  out = {}
  for name, value in hf_state.items():
    name = (name.replace('backbone.embeddings.patch_embeddings.projection', 'backbone.patch_embed'
                         '.proj')
            .replace('backbone.embeddings.position_embeddings', 'backbone.pos_embed')
            .replace('backbone.encoder.layer.', 'backbone.blocks.')
            .replace('layernorm_before', 'norm1').replace('layernorm_after', 'norm2')
            .replace('attention.output.dense', 'attn.proj')
            .replace('backbone.layernorm', 'backbone.last_norm'))
    if '.attention.attention.' in name or name.startswith('head.'):
      continue
    out[name] = value
  for i in range(DEPTH):
    for kind in ('weight', 'bias'):
      out[f'backbone.blocks.{i}.attn.qkv.{kind}'] = torch.cat([
          hf_state[f'backbone.encoder.layer.{i}.attention.attention.{p}.{kind}']
          for p in ('query', 'key', 'value')])
  names = {'deconv1': 'deconv_layers.0', 'batchnorm1': 'deconv_layers.1',
           'deconv2': 'deconv_layers.3', 'batchnorm2': 'deconv_layers.4', 'conv': 'final_layer'}
  for i, head in enumerate(heads):
    prefix = 'keypoint_head.' if i == 0 else f'associate_keypoint_heads.{i - 1}.'
    for name, value in head.items():
      module, leaf = name.split('.')
      out[prefix + names[module] + '.' + leaf] = value
  return {'state_dict': out, 'meta': {'epoch': 210}}


@pytest.mark.parametrize('simple', [False, True], ids=['classic', 'simple'])
def test_hf_checkpoint_converts_to_the_same_heatmaps_for_every_dataset_index(tmp_path, simple):
  hf = _hf_model(simple)
  hf.save_pretrained(tmp_path / 'hf')
  _convert('--src', tmp_path / 'hf', '--format', 'hf', '--dst', tmp_path / 'run',
           '--tasks', ALL_INDICES)
  config = models.ModelConfig.load(tmp_path / 'run')
  assert (config.width, config.depth, config.num_heads, config.expert_dim, config.num_experts,
          config.eps) == (WIDTH, DEPTH, HEADS, PART, EXPERTS, 1e-6)
  assert config.tasks[0].head == ('simple' if simple else 'classic')
  pixels = _pixels()
  for i in range(EXPERTS):
    want = _hf_heatmaps(hf, pixels, i)
    got = _ours(tmp_path / 'run', f't{i}', pixels)
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.1  # randomised weights: the comparison is not between zeros
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  # The experts really differ: a mis-routed expert would show up as a mismatch above.
  assert np.abs(_hf_heatmaps(hf, pixels, 0) - _hf_heatmaps(hf, pixels, 1)).max() > 1e-3


@pytest.mark.parametrize('simple', [False, True], ids=['classic', 'simple'])
def test_mmpose_state_dict_converts_to_the_same_heatmaps_with_each_index_own_head(tmp_path,
                                                                                 simple):
  torch = require_extra('torch')
  hf = _hf_model(simple, seed=1)
  heads = [{k: v.clone() for k, v in _randomize_torch(_hf_model(simple, seed=10 + i).head,
                                                      10 + i).state_dict().items()}
           for i in range(EXPERTS)]
  torch.save(_official_from_hf(hf.state_dict(), heads), tmp_path / 'vitpose.pth')
  _convert('--src', tmp_path / 'vitpose.pth', '--format', 'mmpose', '--dst', tmp_path / 'run',
           '--tasks', ALL_INDICES, '--num-heads', HEADS, '--src-image-size', '64,48')
  pixels = _pixels(seed=1)
  for i in range(EXPERTS):
    hf.head.load_state_dict(heads[i])
    np.testing.assert_allclose(_ours(tmp_path / 'run', f't{i}', pixels),
                               _hf_heatmaps(hf, pixels, i), atol=1e-4, rtol=0)


def test_official_dataset_indices_become_named_tasks_and_mismatches_are_named(tmp_path, capsys):
  """Heads of 17, 14 and 16 keypoints at indices 0-2 are ViTPose++'s coco, aic and mpii."""
  torch = require_extra('torch')
  hf = _hf_model(False, seed=2)
  heads = []
  for k in (17, 14, 16):
    head = {n: v.clone() for n, v in hf.head.state_dict().items()}
    head['conv.weight'] = torch.randn(k, 256, 1, 1) * 0.05
    head['conv.bias'] = torch.randn(k) * 0.1
    heads.append(head)
  torch.save(_official_from_hf(hf.state_dict(), heads), tmp_path / 'pp.pth')
  heads_flag = ['--num-heads', str(HEADS), '--src-image-size', '64,48']
  _convert('--src', tmp_path / 'pp.pth', '--format', 'mmpose', '--dst', tmp_path / 'run',
           *heads_flag)
  config = models.ModelConfig.load(tmp_path / 'run')
  assert [(t.name, t.schema.name, t.expert) for t in config.tasks] == [
      ('coco', 'coco17', 0), ('aic', 'aic14', 1), ('mpii', 'mpii16', 2)]
  assert 'variant custom' in capsys.readouterr().out

  assert convert.main(['--src', str(tmp_path / 'pp.pth'), '--format', 'mmpose', '--dst',
                       str(tmp_path / 'bad'), '--tasks', 'coco=0,wholebody=1:coco_wholebody133',
                       *heads_flag]) == 2
  err = capsys.readouterr().err
  assert 'coco_wholebody133 with 133 keypoints' in err and 'associate_keypoint_heads.0' in err
  assert 'has 14' in err

  _convert('--src', tmp_path / 'pp.pth', '--format', 'mmpose', '--dst', tmp_path / 'drop',
           '--tasks', 'mpii=2', '--drop-headless-experts', *heads_flag)
  dropped = models.ModelConfig.load(tmp_path / 'drop')
  assert dropped.num_experts == 1 and dropped.task('mpii').expert == 0
  pixels = _pixels(seed=2)
  np.testing.assert_allclose(_ours(tmp_path / 'drop', 'mpii', pixels),
                             _ours(tmp_path / 'run', 'mpii', pixels), atol=1e-5)
  # Nothing is overwritten.
  assert convert.main(['--src', str(tmp_path / 'pp.pth'), '--format', 'mmpose', '--dst',
                       str(tmp_path / 'run'), *heads_flag]) == 2
  assert 'already holds a run' in capsys.readouterr().err


def test_wrong_format_is_a_clear_error(tmp_path, capsys):
  hf = _hf_model(True)
  hf.save_pretrained(tmp_path / 'hf')
  assert convert.main(['--src', str(tmp_path / 'hf'), '--format', 'mmpose', '--dst',
                       str(tmp_path / 'run')]) == 2
  assert 'look like hf' in capsys.readouterr().err


def test_split_task_equals_the_factorized_model_and_predict_reads_converted_runs(tmp_path):
  hf = _hf_model(False, seed=3)
  hf.save_pretrained(tmp_path / 'hf')
  _convert('--src', tmp_path / 'hf', '--format', 'hf', '--dst', tmp_path / 'run',
           '--tasks', ALL_INDICES)
  _convert('--split-task', 't1', '--src', tmp_path / 'run', '--dst', tmp_path / 't1')
  split = models.ModelConfig.load(tmp_path / 't1')
  assert not split.factorized and split.task_names == ('t1',)
  pixels = _pixels(seed=3)
  np.save(tmp_path / 'x.npy', pixels)
  assert predict.main(['--workdir', str(tmp_path / 't1'), '--task', 't1', '--pixels',
                       str(tmp_path / 'x.npy'), '--heatmaps-out', str(tmp_path / 'h.npy')]) == 0
  got = np.load(tmp_path / 'h.npy')
  np.testing.assert_allclose(got, _ours(tmp_path / 'run', 't1', pixels), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got, _hf_heatmaps(hf, pixels, 1), atol=1e-4, rtol=0)


def test_default_task_of_a_shared_head_and_kept_experts(tmp_path):
  hf = _hf_model(True, seed=4)
  hf.save_pretrained(tmp_path / 'hf')
  _convert('--src', tmp_path / 'hf', '--format', 'hf', '--dst', tmp_path / 'run')
  config = models.ModelConfig.load(tmp_path / 'run')
  assert [(t.name, t.expert) for t in config.tasks] == [('coco', 0)]
  assert config.num_experts == EXPERTS
  notes = json.loads((tmp_path / 'run' / 'convert.json').read_text())['notes']
  assert any('kept: dataset indices [1, 2]' in n for n in notes)


def test_position_embedding_resampling_matches_torch_bicubic():
  torch = require_extra('torch')
  rng = np.random.default_rng(5)
  for src, dst in (((14, 14), (16, 12)), ((16, 12), (24, 18)), ((16, 12), (8, 6)),
                   ((4, 3), (4, 3))):
    pos = rng.standard_normal((1, 1 + src[0] * src[1], 20)).astype(np.float32)
    grid = torch.from_numpy(pos[0, 1:].reshape(*src, 20)).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(grid, size=dst, mode='bicubic', align_corners=False)
    want = want[0].permute(1, 2, 0).reshape(1, -1, 20).numpy()
    got = resample_pos_embed(pos, src, dst)
    assert got.shape == (1, 1 + dst[0] * dst[1], 20)
    np.testing.assert_array_equal(got[:, :1], pos[:, :1])
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-5, rtol=0)


def test_hf_checkpoint_at_another_input_size_resamples_its_position_embedding(tmp_path):
  torch = require_extra('torch')
  hf = _hf_model(False, seed=6)
  hf.save_pretrained(tmp_path / 'hf')
  _convert('--src', tmp_path / 'hf', '--format', 'hf', '--dst', tmp_path / 'run',
           '--image-size', '96,80')
  model, _ = checkpoint.load_model(tmp_path / 'run')
  assert model.config.grid_size == (6, 5)  # (96 + 4 − 16) // 16 + 1 rows, 80 → 5 cols
  pos = hf.backbone.embeddings.position_embeddings.detach()
  grid = pos[:, 1:].reshape(1, 4, 3, WIDTH).permute(0, 3, 1, 2)
  want = torch.nn.functional.interpolate(grid, size=(6, 5), mode='bicubic', align_corners=False)
  want = want.permute(0, 2, 3, 1).reshape(1, -1, WIDTH).numpy()
  got = np.asarray(model.backbone.pos_embed[...])
  np.testing.assert_allclose(got[:, 1:], want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(got[:, :1], pos[:, :1].numpy(), atol=0)


def _mae_state_dict(seed=7, grid=(14, 14)):
  """A timm/MAE-layout ViT (width 48) with cls token, classifier head and MAE decoder tensors."""
  rng = np.random.default_rng(seed)
  r = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
  sd = {'cls_token': r(1, 1, WIDTH), 'pos_embed': r(1, 1 + grid[0] * grid[1], WIDTH),
        'patch_embed.proj.weight': r(WIDTH, 3, 16, 16), 'patch_embed.proj.bias': r(WIDTH),
        'norm.weight': 1 + r(WIDTH), 'norm.bias': r(WIDTH), 'head.weight': r(10, WIDTH),
        'head.bias': r(10), 'decoder_embed.weight': r(8, WIDTH)}
  for i in range(DEPTH):
    p = f'blocks.{i}.'
    sd.update({p + 'norm1.weight': 1 + r(WIDTH), p + 'norm1.bias': r(WIDTH),
               p + 'norm2.weight': 1 + r(WIDTH), p + 'norm2.bias': r(WIDTH),
               p + 'attn.qkv.weight': r(3 * WIDTH, WIDTH), p + 'attn.qkv.bias': r(3 * WIDTH),
               p + 'attn.proj.weight': r(WIDTH, WIDTH), p + 'attn.proj.bias': r(WIDTH),
               p + 'mlp.fc1.weight': r(4 * WIDTH, WIDTH), p + 'mlp.fc1.bias': r(4 * WIDTH),
               p + 'mlp.fc2.weight': r(WIDTH, 4 * WIDTH), p + 'mlp.fc2.bias': r(WIDTH)})
  return sd


def test_mae_backbone_imports_dense_or_factorized_with_fresh_heads(tmp_path, capsys):
  torch = require_extra('torch')
  sd = _mae_state_dict()
  torch.save({'model': {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / 'mae.pth')
  common = ['--src', tmp_path / 'mae.pth', '--format', 'mae', '--image-size', '64,48',
            '--num-heads', HEADS]
  _convert(*common, '--dst', tmp_path / 'dense')
  out = capsys.readouterr().out
  assert 'left out' in out and 'cls_token' in out and '14×14 → 4×3' in out
  _convert(*common, '--dst', tmp_path / 'moe', '--expert-dim', PART,
           '--tasks', 'coco=0,infant=1:infant_smil25')
  dense, _ = checkpoint.load_model(tmp_path / 'dense')
  moe, _ = checkpoint.load_model(tmp_path / 'moe')
  assert moe.config.factorized and moe.config.num_experts == 2
  assert moe.config.task('infant').num_keypoints == 25
  mlp = moe.backbone.blocks[1].mlp
  np.testing.assert_array_equal(np.asarray(mlp.experts[1].kernel[...]),
                                sd['blocks.1.mlp.fc2.weight'][-PART:].T)
  np.testing.assert_array_equal(np.asarray(mlp.fc2.kernel[...]),
                                sd['blocks.1.mlp.fc2.weight'][:-PART].T)
  np.testing.assert_array_equal(np.asarray(moe.backbone.last_norm.scale[...]), sd['norm.weight'])
  pixels = _pixels(seed=7)
  want = dense.backbone(pixels, [(0, 2, 0)])
  for expert in (0, 1):  # every expert is fc2's last P outputs: each reproduces the dense MLP
    np.testing.assert_allclose(moe.backbone(pixels, [(0, 2, expert)]), want, atol=1e-5)
  # The heads start fresh (the official init: N(0, .001)), not from anything in the file.
  kernel = np.asarray(moe.heads['infant'].final_layer.kernel[...])
  assert 0 < kernel.std() < 0.01


def test_official_vit_h_patch_14_kernel_is_zero_padded_like_the_official_loader(tmp_path):
  sd = _mae_state_dict(grid=(16, 16))
  sd['patch_embed.proj.weight'] = sd['patch_embed.proj.weight'][:, :, :14, :14]
  imported = official.to_model(official.mae_to_official(sd)[0], origin='x', fmt='mae',
                               num_heads=HEADS, image_size=IMAGE)
  kernel = np.asarray(imported.model.backbone.patch_embed.proj.kernel[...])
  assert kernel.shape == (16, 16, 3, WIDTH)
  np.testing.assert_array_equal(kernel[1:15, 1:15], sd['patch_embed.proj.weight'].transpose(
      2, 3, 1, 0))
  assert not kernel[0].any() and not kernel[:, 15].any()


def test_a_converted_mae_backbone_is_a_finetuning_start(cache, tmp_path):
  """``--config.init_from`` takes a converted run: the fine-tune starts from its backbone."""
  from vitpose_jax import configlib, train

  torch = require_extra('torch')
  sd = _mae_state_dict(seed=8)
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / 'mae.pth')
  _convert('--src', tmp_path / 'mae.pth', '--format', 'mae', '--image-size', '64,48',
           '--num-heads', HEADS, '--dst', tmp_path / 'mae')
  multitask = os.path.join(os.path.dirname(__file__), '..', 'configs', 'multitask.py')
  config = configlib.sibling_config(multitask, 'finetune').get_config(
      'tasks=infant,from=coco,train=heads,runlocal')
  with config.unlocked():
    config.init_from = str(tmp_path / 'mae')
    config.evals = {}
    config.plots = 0
  train.train_and_evaluate(config, str(tmp_path / 'ft'))
  tuned, _ = checkpoint.load_model(tmp_path / 'ft')
  assert tuned.config.width == WIDTH and tuned.config.task_names == ('infant',)
  np.testing.assert_array_equal(np.asarray(tuned.backbone.blocks[0].attn.qkv.kernel[...]),
                                sd['blocks.0.attn.qkv.weight'].T)


def test_a_bias_the_file_lacks_is_zero_and_said_so():
  sd = official.mae_to_official(_mae_state_dict())[0]
  del sd['backbone.blocks.1.attn.qkv.bias']
  imported = official.to_model(sd, origin='vit.pth', fmt='mae', num_heads=HEADS,
                               image_size=(64, 48))
  assert '1 biases absent in the file, taken as zero: backbone.blocks.1.attn.qkv.bias' in (
      imported.notes)
  np.testing.assert_array_equal(np.asarray(imported.model.backbone.blocks[1].attn.qkv.bias[...]),
                                0)
