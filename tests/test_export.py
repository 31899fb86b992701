"""Exported StableHLO artifacts: equal to the model, sidecar metadata, errors, the CLI entry."""

import argparse
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import SMALL_IMAGE, randomize, tiny_config
from vitpose_jax import checkpoint, codec, export, models, skeletons
from vitpose_jax.predict import Predictor

TASKS = {'coco': 'coco17', 'infant': 'infant_smil25'}


@pytest.fixture(scope='module')
def model():
  return randomize(models.create_model(tiny_config(TASKS)), scale=0.05)


@pytest.fixture(scope='module')
def pixels():
  return np.asarray(jax.random.normal(jax.random.key(1), (2, *SMALL_IMAGE, 3)))


def roundtrip(exported, path, metadata=None):
  export.write_artifact(exported, str(path), metadata or {})
  return export.load_artifact(str(path))


@pytest.mark.parametrize('flip_test', [False, True])
def test_artifact_matches_model(model, pixels, tmp_path, flip_test):
  artifact = roundtrip(export.export_task(model, 'coco', batch_size=2, flip_test=flip_test),
                       tmp_path / 'coco.stablehlo')
  got = np.asarray(artifact.call(pixels))
  if flip_test:
    want = Predictor(model, flip_test=True).heatmaps('coco', pixels)
  else:
    want = np.asarray(model({'coco': pixels})[0]['coco'])
  assert got.shape == (2, *model.config.heatmap_size, 17) and got.dtype == np.float32
  assert np.abs(want).max() > 1e-2  # randomized heads, not a fresh init's near-zero maps
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_sidecar_metadata(model, tmp_path):
  path = tmp_path / 'infant.stablehlo'
  exported = export.export_task(model, 'infant', batch_size=3)
  export.write_artifact(exported, str(path), export.artifact_metadata(
      model, 'infant', flip_test=False, source=str(tmp_path), step=7))
  with open(f'{path}.json') as f:
    meta = json.load(f)
  h, w = model.config.heatmap_size
  assert meta['task'] == 'infant' and meta['schema'] == 'infant_smil25'
  assert meta['keypoint_names'] == list(skeletons.get('infant_smil25').keypoints)
  assert meta['input_shape'] == [3, *SMALL_IMAGE, 3]
  assert meta['output_shape'] == [3, h, w, 25]
  assert meta['normalisation']['mean'] == [123.675, 116.28, 103.53]
  assert meta['normalisation']['std'] == [58.395, 57.12, 57.375]
  assert meta['flip_test'] is False and meta['source']['step'] == 7
  assert codec.UDPHeatmap.from_dict(meta['codec']) == model.config.codec
  assert meta['platforms'] == [jax.default_backend()] and meta['jax_version'] == jax.__version__
  # Weights are embedded, but only those the exported task reaches: not the other head.
  assert meta['size_bytes'] == os.path.getsize(path)
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
  assert state_bytes / 2 < meta['size_bytes'] < state_bytes


def test_wrong_batch_size_raises(model, pixels, tmp_path):
  artifact = roundtrip(export.export_task(model, 'coco', batch_size=1), tmp_path / 'a.stablehlo')
  with pytest.raises(ValueError, match='shape'):
    artifact.call(pixels)


def test_bad_arguments(model):
  with pytest.raises(ValueError, match='at least 1, got 0'):
    export.export_task(model, 'coco', batch_size=0)
  with pytest.raises(models.ModelConfigError, match="unknown task 'hand'"):
    export.export_task(model, 'hand', batch_size=1)
  with pytest.raises(ValueError, match="'cpu,gpu'"):
    export.parse_platforms('cpu,gpu')
  assert export.parse_platforms(' cpu, CUDA,cpu') == ('cpu', 'cuda')


def cli_args(**kw):
  defaults = dict(export='coco', src=None, dst=None, batch=2, flip_test=False, step=None,
                  platforms=None)
  return argparse.Namespace(**{**defaults, **kw})


def test_main_export(model, pixels, tmp_path, capsys):
  run = str(tmp_path / 'run')
  checkpoint.save_model(run, model, step=3)
  dst = str(tmp_path / 'out' / 'coco.stablehlo')
  # Lowering for CUDA needs no GPU, so a CPU machine can build the GPU artifact too.
  assert export.main_export(cli_args(src=run, dst=dst, platforms='cpu,cuda')) == 0
  line = capsys.readouterr().out.strip()
  assert dst in line and '(2, 64, 48, 3)' in line and 'cpu,cuda' in line
  artifact = export.load_artifact(dst)
  assert artifact.platforms == ('cpu', 'cuda')
  np.testing.assert_allclose(np.asarray(artifact.call(pixels)),
                             np.asarray(model({'coco': pixels})[0]['coco']), atol=1e-5)
  with open(dst + '.json') as f:
    meta = json.load(f)
  assert meta['source'] == {'run': run, 'step': 3}


def test_main_export_errors(model, tmp_path):
  run = str(tmp_path / 'run')
  checkpoint.save_model(run, model, step=0)
  dst = str(tmp_path / 'x.stablehlo')
  with pytest.raises(ValueError, match='--batch must be at least 1, got 0'):
    export.main_export(cli_args(src=run, dst=dst, batch=0))
  with pytest.raises(models.ModelConfigError, match="unknown task 'hand'"):
    export.main_export(cli_args(export='hand', src=run, dst=dst))
  with pytest.raises(models.ModelConfigError, match='not found'):
    export.main_export(cli_args(src=str(tmp_path / 'missing'), dst=dst))
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoint at step 5'):
    export.main_export(cli_args(src=run, dst=dst, step=5))
  assert not os.path.exists(dst)


def test_cudnn_attention_model_exports_portably(model, pixels, tmp_path):
  # A model built with cuDNN attention (a GPU training setting) still exports for every
  # platform: the artifact is traced with XLA's attention, same weights, same heatmaps.
  gpu_model = models.with_kernels(model, models.Kernels('cudnn', joined_mlp_kernels=True))
  exported = export.export_task(gpu_model, 'coco', batch_size=2, platforms=('cpu', 'cuda'))
  got = np.asarray(roundtrip(exported, tmp_path / 'coco.stablehlo').call(pixels))
  want = np.asarray(model({'coco': pixels})[0]['coco'])
  np.testing.assert_allclose(got, want, atol=1e-5)
