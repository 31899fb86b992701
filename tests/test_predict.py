"""Run directories, inference from images and boxes, the predict CLI, drawings."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from conftest import randomize
from vitpose_jax import checkpoint, models, skeletons, synthetic
from vitpose_jax.data import coco, transforms
from vitpose_jax.draw import draw_pose
from vitpose_jax.predict import Predictor

COCO17 = skeletons.get('coco17')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('run')
  model = randomize(models.create_model(models.model_config(
      'nano', {'coco': 'coco17', 'infant': 'infant_smil25'})), scale=0.05)
  checkpoint.save_model(str(path), model, step=3)
  return str(path), model


@pytest.fixture(scope='module')
def adult_image(tmp_path_factory):
  out = tmp_path_factory.mktemp('synthetic')
  ann_path = synthetic.generate(str(out), 'adult', 'val', 1, seed=0)
  data = json.loads(open(ann_path).read())
  ann = data['annotations'][0]
  image_path = str(out / 'images' / data['images'][0]['file_name'])
  return image_path, ann


def test_a_saved_model_loads_back_identically(run_dir):
  path, model = run_dir
  loaded, step = checkpoint.load_model(path)
  assert step == 3 and loaded.config == model.config
  for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoint at step 5'):
    checkpoint.load_model(path, step=5)


def test_a_directory_without_checkpoints_is_a_clear_error(tmp_path):
  models.model_config('nano', ['coco17']).save(tmp_path / 'model.json')
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoints/ folder'):
    checkpoint.load_model(str(tmp_path))


class _FixedHeatmaps(nnx.Module):
  """A fake model: returns the heatmaps it was built with, whatever the input."""

  def __init__(self, config, task, heatmaps):
    self.config, self.task = config, task
    self.heatmaps = nnx.Variable(heatmaps)

  def __call__(self, images):
    return {self.task: self.heatmaps[...]}, {}


def test_predict_image_maps_decoded_keypoints_back_to_the_image(adult_image):
  """Crop → heatmaps that peak where the labels fall in the crop → keypoints back on the labels."""
  image_path, ann = adult_image
  image = np.asarray(Image.open(image_path).convert('RGB'))
  config = models.model_config('nano', {'coco': 'coco17'})
  truth = coco.annotation_keypoints(ann, COCO17)
  center, scale = coco.box_to_center_scale(ann['bbox'])
  matrix = transforms.udp_warp_matrix(center, scale, 0.0, config.image_size)
  crop_kps = np.concatenate([transforms.warp_points(truth[:, :2], matrix),
                             (truth[:, 2:] > 0).astype(np.float32)], axis=1)
  heatmaps, _ = config.codec.encode(crop_kps[None, :, :2], crop_kps[None, :, 2])
  predictor = Predictor(_FixedHeatmaps(config, 'coco', np.asarray(heatmaps)), flip_test=False)
  (instance,) = predictor.predict_image('coco', image, [ann['bbox']])
  labelled = truth[:, 2] > 0
  inside = labelled & (np.abs(crop_kps[:, :2] - [95.5, 127.5]) < [90, 122]).all(axis=1)
  error = np.abs(instance['keypoints'][inside, :2] - truth[inside, :2]).max()
  assert error < 0.1, error
  # The score is the map's maximum: a σ=2 Gaussian sampled within half a pixel of its peak.
  assert (instance['keypoints'][inside, 2] > 0.93).all()


def test_predict_cli_writes_keypoints_json_and_a_drawing(run_dir, adult_image, tmp_path):
  path, _ = run_dir
  image_path, ann = adult_image
  boxes = tmp_path / 'boxes.json'
  boxes.write_text(json.dumps([{'bbox': ann['bbox'], 'score': 0.9}]))
  out, drawing = tmp_path / 'kps.json', tmp_path / 'kps.png'
  subprocess.run([sys.executable, '-m', 'vitpose_jax.predict', '--workdir', path, '--task',
                  'infant', '--image', image_path, '--boxes', str(boxes), '--out', str(out),
                  '--draw', str(drawing), '--threshold', '0'], check=True, capture_output=True)
  result = json.loads(out.read_text())
  assert result['schema'] == 'infant_smil25' and result['box_source'] == 'given boxes'
  (instance,) = result['instances']
  assert len(instance['keypoints']) == 25 and instance['bbox'] == ann['bbox']
  assert Image.open(drawing).size == Image.open(image_path).size


@pytest.mark.parametrize('flip_test', [False, True])
def test_heatmaps_of_uint8_crops_equal_those_of_the_same_crops_normalised(run_dir, flip_test):
  _, model = run_dir
  predictor = Predictor(model, flip_test=flip_test)
  crops = np.random.default_rng(0).integers(0, 256, (2, 256, 192, 3), dtype=np.uint8)
  normalised = (crops.astype(np.float32) - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD
  np.testing.assert_allclose(predictor.heatmaps('coco', crops),
                             predictor.heatmaps('coco', normalised), rtol=1e-5, atol=1e-6)


def test_predict_raw_mode_writes_channel_first_network_heatmaps(run_dir, tmp_path):
  path, model = run_dir
  pixels = np.random.default_rng(0).standard_normal((2, 256, 192, 3)).astype(np.float32)
  np.save(tmp_path / 'x.npy', pixels)
  subprocess.run([sys.executable, '-m', 'vitpose_jax.predict', '--workdir', path, '--task',
                  'coco', '--pixels', str(tmp_path / 'x.npy'), '--heatmaps-out',
                  str(tmp_path / 'h.npy')], check=True, capture_output=True)
  got = np.load(tmp_path / 'h.npy')
  want, _ = model({'coco': pixels})
  assert got.shape == (2, 17, 64, 48)
  np.testing.assert_allclose(got, np.asarray(want['coco']).transpose(0, 3, 1, 2), atol=1e-5)


def test_predict_cli_errors_are_one_line(run_dir, tmp_path):
  path, _ = run_dir
  bad = subprocess.run([sys.executable, '-m', 'vitpose_jax.predict', '--workdir', path,
                        '--task', 'dogs', '--image', 'x.png', '--out', str(tmp_path / 'o.json')],
                       capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: unknown task 'dogs'; the model has ['coco', 'infant']"]


def test_drawing_puts_schema_colours_on_keypoints_and_links():
  image = np.zeros((256, 192, 3), np.uint8)
  kps = np.zeros((17, 3))
  kps[5] = [50, 100, 0.9]   # left_shoulder
  kps[7] = [50, 180, 0.9]   # left_elbow, linked to the shoulder
  kps[6] = [140, 100, 0.1]  # right_shoulder, below the threshold
  out = np.asarray(draw_pose(image, [kps], COCO17, threshold=0.3))
  left = np.array(COCO17.keypoint_colors[5])
  assert np.abs(out[100, 50].astype(int) - left).max() < 40
  link = COCO17.link_colors[COCO17.link_indices.index((5, 7))]
  assert np.abs(out[140, 50].astype(int) - np.array(link)).max() < 40
  assert out[100, 140].max() == 0
