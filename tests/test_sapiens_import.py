"""``convert --format sapiens`` (interop extra): Sapiens pose checkpoints (.pth under
``state_dict``, TorchScript, torch.export) into runs that predict and export; the position
embedding's grid, its cls slot and resampling; the task from the keypoint count; the codec σ;
one-line errors. The network is tests/sapiens_torch.py's transcription at a tiny size."""

import copy
import json

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import sapiens_torch
from conftest import require_extra
from vitpose_jax import checkpoint, convert, export, predict
from vitpose_jax.interop import official
from vitpose_jax.interop.resample import resize_bicubic

WIDTH, DEPTH, HEADS, CHANNELS = 64, 2, 4, 32
IMAGE = (64, 48)
SMALL = ['--num-heads', str(HEADS), '--src-image-size', '64,48']


def _network(keypoints=17, image_size=IMAGE, seed=0):
  torch = require_extra('torch')
  return sapiens_torch.randomize(torch, sapiens_torch.sapiens(
      torch, width=WIDTH, depth=DEPTH, heads=HEADS, channels=CHANNELS, keypoints=keypoints,
      image_size=image_size), seed)


def _numpy(network) -> dict[str, np.ndarray]:
  return {name: t.detach().numpy().copy() for name, t in network.state_dict().items()}


def _save(sd: dict[str, np.ndarray], path) -> str:
  """An mmengine-style checkpoint: the weights under ``state_dict``, beside metadata."""
  torch = require_extra('torch')
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in sd.items()},
              'meta': {'epoch': 210}}, path)
  return str(path)


def _convert(*args):
  assert convert.main([str(a) for a in args]) == 0


def _pixels(size=IMAGE, n=2, seed=0):
  return np.random.default_rng(seed).standard_normal((n, *size, 3)).astype(np.float32)


def _heatmaps(run, task, pixels):
  model, _ = checkpoint.load_model(str(run))
  return np.asarray(nnx.jit(lambda m, x: m({task: x})[0][task])(model, pixels))


def _same_weights(a, b):
  leaves_a, leaves_b = (jax.tree.leaves(nnx.state(m)) for m in (a, b))
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def network():
  return _network()


@pytest.fixture(scope='module')
def pth(network, tmp_path_factory):
  return _save(_numpy(network), tmp_path_factory.mktemp('sapiens') / 'sapiens_tiny_coco.pth')


@pytest.fixture(scope='module')
def pth_run(pth, tmp_path_factory):
  run = tmp_path_factory.mktemp('run') / 'coco'
  _convert('--src', pth, '--format', 'sapiens', '--dst', run, *SMALL)
  return run


def test_pth_checkpoint_converts_through_the_cli(network, pth, pth_run):
  torch = require_extra('torch')
  data = json.loads((pth_run / 'model.json').read_text())
  assert data['pos_embed_cls_slot'] is False and data['variant'] == 'custom'
  assert {name: (t['head'], t['schema']['name']) for name, t in data['tasks'].items()} == {
      'coco': ('sapiens', 'coco17')}
  assert (data['width'], data['depth'], data['num_heads'], data['deconv_channels'],
          data['num_deconv_layers'], data['eps']) == (WIDTH, DEPTH, HEADS, CHANNELS, 2, 1e-6)
  # 16×12 heatmaps: Sapiens' σ 6 at 256×192 scaled down, floored at 2.
  assert data['codec']['heatmap_size'] == [16, 12] and data['codec']['sigma'] == 2.0
  record = json.loads((pth_run / 'convert.json').read_text())
  assert record['format'] == 'sapiens'
  assert any('CC BY-NC 4.0' in note for note in record['notes'])
  assert f'{HEADS} attention heads (given)' in record['notes']
  pixels = _pixels()
  delta = np.abs(_heatmaps(pth_run, 'coco', pixels)
                 - sapiens_torch.heatmaps(torch, network, pixels)).max()
  assert delta < 1e-4, delta


@pytest.mark.filterwarnings('ignore::DeprecationWarning',
                            'ignore:Converting a tensor to a Python boolean')
def test_torchscript_and_torch_export_files_give_the_same_weights(network, pth_run, tmp_path,
                                                                  capsys):
  torch = require_extra('torch')
  example = torch.zeros(1, 3, *IMAGE)
  # Sapiens-Lite names its TorchScript files *_torchscript.pt2: the entries tell, not the suffix.
  script = tmp_path / 'sapiens_tiny_coco_torchscript.pt2'
  torch.jit.save(torch.jit.trace(network, example), str(script))
  _convert('--src', script, '--format', 'sapiens', '--dst', tmp_path / 'script', *SMALL)
  reference, _ = checkpoint.load_model(str(pth_run))
  _same_weights(checkpoint.load_model(str(tmp_path / 'script'))[0], reference)

  # Sapiens-Lite's torch.export files hold bfloat16 weights: they widen to float32 exactly.
  bf16 = copy.deepcopy(network).to(torch.bfloat16)
  exported = tmp_path / 'sapiens_tiny_coco_bfloat16.pt2'
  torch.export.save(torch.export.export(bf16, (example.to(torch.bfloat16),)), str(exported))
  capsys.readouterr()
  assert convert.main(['--src', str(exported), '--format', 'sapiens', '--dst',
                       str(tmp_path / 'refused'), *SMALL]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(exported) in err and '--trust-pickle' in err
  _convert('--src', exported, '--format', 'sapiens', '--dst', tmp_path / 'export', *SMALL,
           '--trust-pickle')
  widened = {name: t.float().numpy() for name, t in bf16.state_dict().items()}
  _same_weights(checkpoint.load_model(str(tmp_path / 'export'))[0], official.to_model(
      official.sapiens_to_official(widened), origin='bf16', fmt='sapiens', num_heads=HEADS,
      src_image_size=IMAGE).model)

  # A .pt2 that is neither kind of archive is named as such.
  torch.save(network.state_dict(), tmp_path / 'plain.pt2')
  assert convert.main(['--src', str(tmp_path / 'plain.pt2'), '--format', 'sapiens', '--dst',
                       str(tmp_path / 'plain'), *SMALL]) == 2
  assert 'neither a TorchScript nor a torch.export archive' in capsys.readouterr().err


def test_the_source_grid_is_the_given_input_size_and_resamples_to_another(tmp_path, capsys):
  """A 48×64 source has as many positions as a 64×48 one: --src-image-size decides the grid,
  and --image-size resamples it as Sapiens resizes at run time (bicubic, torch semantics)."""
  torch = require_extra('torch')
  wide = _network(image_size=(48, 64), seed=1)
  path = _save(_numpy(wide), tmp_path / 'wide.pth')
  common = ['--src', path, '--format', 'sapiens', '--num-heads', str(HEADS)]
  assert convert.main([*map(str, common), '--dst', str(tmp_path / 'guess')]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and path in err and 'backbone.pos_embed' in err
  assert '64×48 grid of a 1024×768 input' in err and '--src-image-size' in err

  _convert(*common, '--src-image-size', '48,64', '--dst', tmp_path / 'wide')
  pixels = _pixels((48, 64))
  np.testing.assert_allclose(_heatmaps(tmp_path / 'wide', 'coco', pixels),
                             sapiens_torch.heatmaps(torch, wide, pixels), atol=1e-4, rtol=0)

  _convert(*common, '--src-image-size', '48,64', '--image-size', '96,80', '--sigma', '2.5',
           '--dst', tmp_path / 'bigger')
  assert '3×4 → 6×5' in capsys.readouterr().out
  model, _ = checkpoint.load_model(str(tmp_path / 'bigger'))
  assert model.config.grid_size == (6, 5) and model.config.heatmap_sigma == 2.5
  source = wide.backbone.pos_embed.detach().numpy().reshape(3, 4, WIDTH)
  np.testing.assert_allclose(np.asarray(model.backbone.pos_embed[...]),
                             resize_bicubic(source, (6, 5)).reshape(1, 30, WIDTH),
                             atol=1e-6, rtol=0)
  pixels = _pixels((96, 80))
  delta = np.abs(_heatmaps(tmp_path / 'bigger', 'coco', pixels)
                 - sapiens_torch.heatmaps(torch, wide, pixels)).max()
  assert delta < 1e-4, delta


def test_a_cls_slot_is_dropped(network):
  sd = _numpy(network)
  grid = sd['backbone.pos_embed']
  slot = np.full((1, 1, WIDTH), 7.0, np.float32)
  sd['backbone.pos_embed'] = np.concatenate([slot, grid], axis=1)
  imported = official.to_model(official.sapiens_to_official(sd), origin='x.pth', fmt='sapiens',
                               num_heads=HEADS, src_image_size=IMAGE)
  np.testing.assert_array_equal(np.asarray(imported.model.backbone.pos_embed[...]), grid)
  assert any('backbone.pos_embed has a cls slot' in note and 'dropped' in note
             for note in imported.notes)


@pytest.mark.parametrize('keypoints, task, schema', [(133, 'wholebody', 'coco_wholebody133'),
                                                     (308, 'goliath', 'goliath308')])
def test_the_keypoint_count_picks_the_task(network, keypoints, task, schema):
  sd = _numpy(network)
  rng = np.random.default_rng(keypoints)
  sd['head.final_layer.weight'] = rng.standard_normal((keypoints, CHANNELS, 1, 1), np.float32)
  sd['head.final_layer.bias'] = rng.standard_normal(keypoints, np.float32)
  options = dict(origin='x.pth', fmt='sapiens', num_heads=HEADS, src_image_size=IMAGE)
  imported = official.to_model(official.sapiens_to_official(sd), **options)
  assert [(t.name, t.schema.name, t.head) for t in imported.config.tasks] == [
      (task, schema, 'sapiens')]
  # Renamed, with the head's own schema; or another schema, which must fit the head.
  renamed = official.to_model(official.sapiens_to_official(sd), **options,
                              tasks=official.parse_tasks('body=0'))
  assert [(t.name, t.schema.name) for t in renamed.config.tasks] == [('body', schema)]
  with pytest.raises(official.ConvertError, match=f'coco17 with 17 keypoints but the head of '
                     rf'dataset index 0 \(head\.\) has {keypoints}'):
    official.to_model(official.sapiens_to_official(sd), **options,
                      tasks=official.parse_tasks('body=0:coco17'))


def test_sigma_rule():
  assert [official.sapiens_sigma(size) for size in ((256, 192), (128, 96), (64, 48), (16, 12))
          ] == [6.0, 3.0, 2.0, 2.0]


def _broken(sd, case):
  sd = dict(sd)
  if case == 'keypoints':
    sd['head.final_layer.weight'] = sd['head.final_layer.weight'][:5]
    sd['head.final_layer.bias'] = sd['head.final_layer.bias'][:5]
  elif case == 'missing':
    del sd['backbone.layers.1.ln2.weight']
  elif case == 'head':
    del sd['head.conv_layers.3.weight']
  elif case == 'bias':
    del sd['backbone.layers.1.attn.qkv.bias']
    del sd['backbone.layers.0.ffn.layers.1.bias']
  return sd


@pytest.mark.parametrize('case, flags, wanted', [
    ('keypoints', SMALL, ['head.final_layer.weight has 5 outputs', '--tasks NAME=0:SCHEMA']),
    ('width', ['--src-image-size', '64,48'],
     ['width 64 is not a published Sapiens size (1024, 1280, 1536, 1920)', '--num-heads']),
    ('missing', SMALL, ["tensor 'backbone.layers.1.ln2.weight' is missing"]),
    ('head', SMALL, ['head.conv_layers 1 convolutions']),
    # Every Sapiens linear has a bias: one absent is a damaged file, not a zero.
    ('bias', SMALL, ["tensor 'backbone.layers.0.ffn.layers.1.bias' is missing (and 1 other "
                     'biases)']),
    ('grid', ['--num-heads', str(HEADS), '--src-image-size', '48,48'],
     ['backbone.pos_embed has shape (1, 12, 64)', '3×3 grid of a 48×48 input']),
    ('tasks', [*SMALL, '--tasks', 'coco=1'], ['dataset index 1, which has no head']),
])
def test_errors_are_one_line_naming_the_file_and_field(network, tmp_path, capsys, case, flags,
                                                       wanted):
  path = _save(_broken(_numpy(network), case), tmp_path / f'{case}.pth')
  assert convert.main(['--src', path, '--format', 'sapiens', '--dst', str(tmp_path / 'run'),
                       *flags]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith(f'error: {path}: '), err
  for text in wanted:
    assert text in err, (text, err)


def test_export_and_predict_on_imported_runs(tmp_path):
  """A tiny network at Sapiens' 1024×768 (a 64×48 grid), converted as it is and at 256×192:
  each run's exported artifact equals its model, and predict draws on the smaller one."""
  network = _network(image_size=(1024, 768), seed=2)
  path = _save(_numpy(network), tmp_path / 'sapiens_1024.pth')
  _convert('--src', path, '--format', 'sapiens', '--num-heads', HEADS, '--dst', tmp_path / 'full')
  _convert('--src', path, '--format', 'sapiens', '--num-heads', HEADS, '--image-size', '256,192',
           '--dst', tmp_path / 'small')
  for run, size, sigma in (('full', (1024, 768), 6.0), ('small', (256, 192), 2.0)):
    model, _ = checkpoint.load_model(str(tmp_path / run))
    assert model.config.image_size == size and model.config.heatmap_sigma == sigma
    artifact = tmp_path / f'{run}.stablehlo'
    _convert('--export', 'coco', '--src', tmp_path / run, '--dst', artifact)
    meta = json.loads((tmp_path / f'{run}.stablehlo.json').read_text())
    assert meta['codec']['sigma'] == sigma and meta['input_shape'] == [1, *size, 3]
    pixels = _pixels(size, n=1, seed=4)
    got = np.asarray(export.load_artifact(str(artifact)).call(pixels))
    want = _heatmaps(tmp_path / run, 'coco', pixels)
    assert got.shape == want.shape == (1, size[0] // 4, size[1] // 4, 17)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

  image = tmp_path / 'person.png'
  Image.fromarray(np.random.default_rng(5).integers(0, 256, (160, 120, 3), np.uint8)).save(image)
  out, drawing = tmp_path / 'kps.json', tmp_path / 'kps.png'
  assert predict.main(['--workdir', str(tmp_path / 'small'), '--task', 'coco', '--image',
                       str(image), '--out', str(out), '--draw', str(drawing),
                       '--threshold', '0']) == 0
  (instance,) = json.loads(out.read_text())['instances']
  assert len(instance['keypoints']) == 17
  assert Image.open(drawing).size == (120, 160)


def test_damaged_or_odd_files_and_flags_get_one_line_errors(network, tmp_path, capsys):
  import safetensors.numpy

  sd = _numpy(network)
  good = tmp_path / 'good.safetensors'
  safetensors.numpy.save_file(sd, str(good))
  truncated = tmp_path / 'truncated.safetensors'
  truncated.write_bytes(good.read_bytes()[:-100])
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  for args, wanted in [
      (['--src', truncated, '--dst', tmp_path / 'r1', *SMALL], 'truncated.safetensors: cannot load'),
      (['--src', good, '--dst', a_file, *SMALL], 'a_file: is a file; --dst names the run'),
  ]:
    assert convert.main([str(a) for a in (*args, '--format', 'sapiens')]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and wanted in err, err
  for heads in ('0', '-4', 'four'):
    with pytest.raises(SystemExit):
      convert.main(['--src', str(good), '--format', 'sapiens', '--dst', str(tmp_path / 'r2'),
                    '--num-heads', heads])
    assert 'expected a positive integer' in capsys.readouterr().err
  # An input the patches do not tile would stretch every decoded keypoint.
  assert convert.main(['--src', str(good), '--format', 'sapiens', '--dst', str(tmp_path / 'r3'),
                       *SMALL, '--image-size', '250,190']) == 2
  assert 'must be a multiple of the patch size 16' in capsys.readouterr().err


def test_bfloat16_safetensors_widen_exactly_and_a_short_network_is_noted(network, tmp_path,
                                                                         capsys):
  import ml_dtypes
  import safetensors.numpy

  sd = {k: v.astype(ml_dtypes.bfloat16) for k, v in _numpy(network).items()}
  path = tmp_path / 'bf16.safetensors'
  safetensors.numpy.save_file(sd, str(path))
  _convert('--src', path, '--format', 'sapiens', '--dst', tmp_path / 'run', *SMALL)
  model, _ = checkpoint.load_model(str(tmp_path / 'run'))
  np.testing.assert_array_equal(
      np.asarray(model.backbone.blocks[0].attn.qkv.bias[...]),
      sd['backbone.layers.0.attn.qkv.bias'].astype(np.float32))
  capsys.readouterr()
  # Width 1024 is Sapiens-0.3B's, whose 24 blocks a file of 2 lacks.
  imported = official.to_model(
      official.sapiens_to_official(_numpy(_network_of_width(1024))), origin='x.pth',
      fmt='sapiens', num_heads=16, src_image_size=IMAGE)
  assert ('depth 2, where the published Sapiens models of width 1024 have 24: check that the '
          'file is complete') in imported.notes


def _network_of_width(width):
  torch = require_extra('torch')
  return sapiens_torch.sapiens(torch, width=width, depth=DEPTH, heads=16, channels=CHANNELS,
                               keypoints=17, image_size=IMAGE)
