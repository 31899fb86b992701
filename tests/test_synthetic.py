"""The synthetic generator: determinism, COCO output per population, labels on drawn content,
the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from vitpose_jax import skeletons
from vitpose_jax.data import coco, render, synthetic

POPULATIONS = tuple(synthetic.POPULATIONS)
# pycocotools' mask decoding trips NumPy 2's copy-keyword deprecation inside the library.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')


def _files(out_dir) -> dict[str, bytes]:
  names = ['annotations.json'] + [os.path.join('images', n)
                                  for n in sorted(os.listdir(os.path.join(out_dir, 'images')))]
  out = {}
  for name in names:
    with open(os.path.join(out_dir, name), 'rb') as f:
      out[name] = f.read()
  return out


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
  """Six instances of each population, generated once for the module."""
  out = {}
  for population in POPULATIONS:
    path = tmp_path_factory.mktemp(population)
    synthetic.generate(path, population, 'train', 6, seed=11)
    with open(path / 'annotations.json') as f:
      out[population] = (path, json.load(f))
  return out


@pytest.mark.parametrize('population', POPULATIONS)
def test_same_arguments_give_identical_bytes_and_seed_or_split_change_them(tmp_path, population):
  synthetic.generate(tmp_path / 'a', population, 'train', 3, seed=3)
  synthetic.generate(tmp_path / 'b', population, 'train', 3, seed=3)
  synthetic.generate(tmp_path / 'c', population, 'train', 3, seed=4)
  synthetic.generate(tmp_path / 'd', population, 'val', 3, seed=3)
  a = _files(tmp_path / 'a')
  assert a == _files(tmp_path / 'b')
  for other in ('c', 'd'):
    b = _files(tmp_path / other)
    assert a['annotations.json'] != b['annotations.json']
    assert a['images/000000000001.jpg'] != b['images/000000000001.jpg']


def test_a_rerun_into_the_same_directory_replaces_the_old_images(tmp_path):
  synthetic.generate(tmp_path, 'infant', 'train', 4, seed=0)
  synthetic.generate(tmp_path, 'infant', 'train', 1, seed=0)
  with open(tmp_path / 'annotations.json') as f:
    dataset = json.load(f)
  assert sorted(os.listdir(tmp_path / 'images')) == [i['file_name'] for i in dataset['images']]


@pytest.mark.parametrize('population', POPULATIONS)
def test_coco_output_is_complete_and_consistent(datasets, population):
  path, dataset = datasets[population]
  schema = skeletons.get(synthetic.POPULATIONS[population])
  assert dataset['info']['generator_version'] == synthetic.GENERATOR_VERSION
  (category,) = dataset['categories']
  assert category['id'] == 1 and category['name'] == 'person'
  assert category['keypoints'] == list(schema.keypoints)
  assert category['skeleton'] == [[a + 1, b + 1] for a, b in schema.link_indices]
  anns = dataset['annotations']
  assert len(anns) == 6 and [a['id'] for a in anns] == list(range(1, 7))
  images = {i['id']: i for i in dataset['images']}
  assert len(images) <= 6
  for info in images.values():
    with Image.open(path / 'images' / info['file_name']) as im:
      assert im.format == 'JPEG' and im.size == (info['width'], info['height'])
    assert 320 <= info['width'] <= 512 and 256 <= info['height'] <= 448
  for ann in anns:
    info = images[ann['image_id']]
    w, h = info['width'], info['height']
    kps = coco.annotation_keypoints(ann, schema)
    assert kps.shape == (schema.num_keypoints, 3)
    assert set(np.unique(kps[:, 2])) <= {0., 1., 2.}
    assert np.all(kps[kps[:, 2] == 0, :2] == 0)
    labelled = kps[kps[:, 2] > 0]
    assert np.all((labelled[:, 0] >= 0) & (labelled[:, 0] <= w - 1))
    assert np.all((labelled[:, 1] >= 0) & (labelled[:, 1] <= h - 1))
    assert ann['num_keypoints'] == len(labelled) and (kps[:, 2] == 2).sum() >= 5
    assert ann['category_id'] == 1 and ann['iscrowd'] == 0
    x, y, bw, bh = ann['bbox']
    assert x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
    # The silhouette as a COCO reader sees it: its polygons, rasterised by pycocotools.
    assert ann['segmentation'] and all(len(p) >= 6 and len(p) % 2 == 0
                                       for p in ann['segmentation'])
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w)))
    assert abs(int(mask.sum()) - ann['area']) <= 0.08 * ann['area']
    rows, cols = np.nonzero(mask)
    assert abs(cols.min() - x) <= 1 and abs(rows.min() - y) <= 1
    assert abs(cols.max() + 1 - (x + bw)) <= 1 and abs(rows.max() + 1 - (y + bh)) <= 1
    near = ndimage.binary_dilation(mask, iterations=2)
    visible = kps[kps[:, 2] == 2]
    ij = np.floor(visible[:, [1, 0]] + 0.5).astype(int)
    assert near[ij[:, 0], ij[:, 1]].all(), 'a visible keypoint lies off its own silhouette'


def test_wholebody_uses_cocowholebody_fields(datasets):
  _, dataset = datasets['adult_wholebody']
  sizes = {'keypoints': 17, 'foot_kpts': 6, 'face_kpts': 68, 'lefthand_kpts': 21,
           'righthand_kpts': 21}
  for ann in dataset['annotations']:
    for field, k in sizes.items():
      assert len(ann[field]) == 3 * k
    for part, field in (('face', 'face_kpts'), ('lefthand', 'lefthand_kpts'),
                        ('righthand', 'righthand_kpts'), ('foot', 'foot_kpts')):
      table = np.asarray(ann[field]).reshape(-1, 3)
      assert ann[f'{part}_valid'] == bool((table[:, 2] > 0).any())
      if part != 'foot' and ann[f'{part}_valid']:
        x, y, w, h = ann[f'{part}_box']
        pts = table[table[:, 2] > 0, :2]
        assert np.allclose([x, y, x + w, y + h], [*pts.min(0), *pts.max(0)], atol=0.02)


@pytest.mark.parametrize('population', POPULATIONS)
def test_visible_keypoints_lie_on_drawn_content(population):
  for k in range(2):
    scene = synthetic.render_scene(np.random.default_rng([7, k]), population)
    for inst in scene.instances:
      visible = inst.keypoints[inst.keypoints[:, 2] == 2]
      ij = np.floor(visible[:, [1, 0]] + 0.5).astype(int)
      # Drawn, not background: the pixel changed when the people were rendered ...
      change = np.abs(scene.clean - scene.background)[ij[:, 0], ij[:, 1]].max(axis=1)
      assert (change > 1e-4).all()
      # ... and by this instance: its own silhouette holds the pixel.
      assert inst.mask[ij[:, 0], ij[:, 1]].all()


def test_left_keypoints_are_anatomical_left_so_they_swap_sides_seen_from_behind():
  fig, _ = synthetic._person(np.random.default_rng(0), 'adult')
  flip = np.diag([1., -1., -1.])   # body (left, up, forward) -> camera (x, y, z)
  for yaw, left_on_image_right in ((0., True), (180., False)):
    view = flip @ synthetic._ry(yaw)
    x = {n: (fig.points[n] @ view.T)[0] for n in ('left_shoulder', 'right_shoulder', 'left_hip',
                                                   'right_hip')}
    assert (x['left_shoulder'] > x['right_shoulder']) == left_on_image_right
    assert (x['left_hip'] > x['right_hip']) == left_on_image_right


def test_mask_outlines_rasterise_back_to_the_mask():
  rng = np.random.default_rng(0)
  mask = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((60, 80)), 3) > 0.5)
  outlines = render.mask_outlines(mask, tolerance=0.)
  decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
      [o.ravel().tolist() for o in outlines], 60, 80)))
  assert np.array_equal(decoded.astype(bool), ndimage.binary_fill_holes(mask))


def test_generate_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match='population'):
    synthetic.generate(tmp_path, 'giant', 'train', 1, 0)
  with pytest.raises(ValueError, match='split'):
    synthetic.generate(tmp_path, 'adult', 'test', 1, 0)
  with pytest.raises(ValueError, match='num'):
    synthetic.generate(tmp_path, 'adult', 'train', 0, 0)
  with pytest.raises(ValueError, match='seed'):
    synthetic.generate(tmp_path, 'adult', 'train', 1, -1)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'vitpose_jax.data.synthetic', *args],
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_writes_the_dataset_and_a_preview(tmp_path):
  preview = tmp_path / 'grid.png'
  done = _cli('--out', str(tmp_path / 'd'), '--population', 'wheelchair', '--split', 'val',
              '--num', '3', '--seed', '2', '--preview', str(preview))
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == str(tmp_path / 'd' / 'annotations.json')
  with Image.open(preview) as im:
    assert im.format == 'PNG' and min(im.size) >= 256


@pytest.mark.parametrize('args', [
    ('--population', 'giant', '--split', 'train', '--num', '2'),
    ('--population', 'adult', '--split', 'train', '--num', '0'),
    ('--population', 'adult', '--split', 'train', '--num', 'many'),
    ('--population', 'adult', '--split', 'train', '--num', '2', '--seed', '-3'),
    ('--population', 'adult', '--num', '2'),
])
def test_cli_bad_arguments_give_a_one_line_error(tmp_path, args):
  done = _cli('--out', str(tmp_path), *args)
  assert done.returncode == 2
  assert done.stdout == ''
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and 'error:' in lines[0]


def test_cli_help():
  done = _cli('--help')
  assert done.returncode == 0 and '--population' in done.stdout
