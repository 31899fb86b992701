"""COCO-format reading, bad-input handling in both modes, and TFDS packing."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vitpose_jax import skeletons
from vitpose_jax.data import coco, packing
from vitpose_jax.data.coco import DataError

COCO17 = skeletons.get('coco17')


def _keypoints(k, seed=0, v=2):
  rng = np.random.default_rng(seed)
  kps = np.zeros((k, 3))
  kps[:, 0] = rng.uniform(10, 50, k)
  kps[:, 1] = rng.uniform(10, 70, k)
  kps[:, 2] = v
  return kps.reshape(-1).round(2).tolist()


def _annotation(ann_id, image_id=1, k=17, **overrides):
  ann = {'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
         'bbox': [5.0, 8.0, 50.0, 66.0], 'keypoints': _keypoints(k, ann_id), 'num_keypoints': k}
  ann.update(overrides)
  return ann


def _triplets(record):
  """A record's labels as the file holds them: (K, 3) [x, y, v]."""
  return np.concatenate([record['keypoints'], record['keypoints_visible'][:, None]], axis=1)


def _write(tmp_path, annotations, images=None, categories=None):
  img_dir = tmp_path / 'images'
  img_dir.mkdir(exist_ok=True)
  if images is None:  # one random image; callers passing `images` write their own files
    images = [{'id': 1, 'file_name': 'a.png', 'width': 64, 'height': 80}]
    pixels = np.random.default_rng(0).integers(0, 255, (80, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(img_dir / 'a.png')
  path = tmp_path / 'ann.json'
  path.write_text(json.dumps({
      'images': images, 'annotations': annotations,
      'categories': categories or [{'id': 1, 'name': 'person'}]}))
  return str(path), str(img_dir)


def test_records_hold_box_centre_scale_and_keypoints(tmp_path):
  path, images = _write(tmp_path, [_annotation(7)])
  (record,), report = coco.read_coco(path, images, COCO17)
  assert report.kept == 1 and report.skipped == 0
  assert record['instance_id'] == 7 and record['image_id'] == 1
  assert record['keypoints'].shape == (17, 2) and record['keypoints'].dtype == np.float32
  assert record['keypoints_visible'].shape == (17,)
  assert record['keypoints_visible'].dtype == np.float32
  np.testing.assert_allclose(_triplets(record).reshape(-1), _annotation(7)['keypoints'], rtol=1e-6)
  # As the official loader: the box [5, 8, 50, 66] covers pixels 5..54 × 8..73, i.e. [5, 8, 49, 65]
  # between pixel centres; 49 > 0.75 · 65, so the height grows to 49 / 0.75; then padding 1.25.
  np.testing.assert_allclose(record['bbox'], [5, 8, 49, 65])
  np.testing.assert_allclose(record['center'], [29.5, 40.5])
  np.testing.assert_allclose(record['scale'], [49 * 1.25, 49 / 0.75 * 1.25], rtol=1e-6)
  np.testing.assert_array_equal(record['image_size'], [64, 80])


def test_box_to_center_scale_reaches_aspect_3_to_4_with_padding():
  center, scale = coco.box_to_center_scale([0, 0, 40, 40])
  np.testing.assert_allclose(center, [20, 20])
  np.testing.assert_allclose(scale, [40 * 1.25, 40 / 0.75 * 1.25], rtol=1e-6)
  _, scale = coco.box_to_center_scale([0, 0, 90, 40])
  np.testing.assert_allclose(scale / scale[1] * 4, [3, 4], rtol=1e-6)


def test_wholebody_split_fields_assemble_in_schema_order(tmp_path):
  wb = skeletons.get('coco_wholebody133')
  flat = np.arange(133 * 3, dtype=np.float64).reshape(133, 3) % 60 + 1
  flat[:, 2] = 2
  ann = _annotation(3, keypoints=flat[:17].reshape(-1).tolist(),
                    foot_kpts=flat[17:23].reshape(-1).tolist(),
                    face_kpts=flat[23:91].reshape(-1).tolist(),
                    lefthand_kpts=flat[91:112].reshape(-1).tolist(),
                    righthand_kpts=flat[112:133].reshape(-1).tolist())
  path, images = _write(tmp_path, [ann])
  (record,), _ = coco.read_coco(path, images, wb)
  np.testing.assert_array_equal(_triplets(record), flat.astype(np.float32))


def test_labels_are_placed_by_category_keypoint_names(tmp_path):
  """COCO-17 labels (as WheelPose publishes) train wheelchair23 with chair points unlabelled."""
  cats = [{'id': 1, 'name': 'person', 'keypoints': list(COCO17.keypoints)}]
  path, images = _write(tmp_path, [_annotation(1)], categories=cats)
  (record,), _ = coco.read_coco(path, images, skeletons.get('wheelchair23'))
  np.testing.assert_allclose(_triplets(record)[:17].reshape(-1), _annotation(1)['keypoints'],
                             rtol=1e-6)
  assert (_triplets(record)[17:] == 0).all()


def _bad_cases():
  nan_kps = _keypoints(17)
  nan_kps[3] = math.nan
  return {
      'missing image': (dict(image_id=2), 'bad image', 'image file not found'),
      'corrupt image': (dict(image_id=3), 'bad image', 'image file is corrupt'),
      'wrong keypoint count': (dict(keypoints=_keypoints(16)), 'wrong keypoint count',
                               'keypoints hold 48 values, expected 51'),
      'nan coordinates': (dict(keypoints=nan_kps), 'non-finite values', 'NaN'),
      'bbox outside image': (dict(bbox=[100.0, 5.0, 20.0, 20.0]), 'bad bbox', 'outside'),
      'bbox zero area': (dict(bbox=[5.0, 5.0, 0.0, 20.0]), 'bad bbox', 'zero area'),
      'no labelled keypoints': (dict(keypoints=_keypoints(17, v=0)), 'no labelled keypoints',
                                'no keypoint has v > 0'),
  }


def _bad_dataset(tmp_path, overrides):
  images = [{'id': 1, 'file_name': 'a.png', 'width': 64, 'height': 80},
            {'id': 2, 'file_name': 'missing.png', 'width': 64, 'height': 80},
            {'id': 3, 'file_name': 'corrupt.jpg', 'width': 64, 'height': 80}]
  img_dir = tmp_path / 'images'
  img_dir.mkdir()
  Image.fromarray(np.zeros((80, 64, 3), np.uint8)).save(img_dir / 'a.png')
  full = img_dir / 'full.jpg'
  Image.fromarray(np.full((80, 64, 3), 128, np.uint8)).save(full)
  (img_dir / 'corrupt.jpg').write_bytes(full.read_bytes()[:200])  # truncated JPEG
  path, images_dir = _write(tmp_path, [_annotation(1), _annotation(99, **overrides)], images)
  return path, images_dir


@pytest.mark.parametrize('case', list(_bad_cases()))
def test_bad_input_is_skipped_and_counted_by_default(case, tmp_path):
  overrides, reason, _ = _bad_cases()[case]
  records, report = coco.read_coco(*_bad_dataset(tmp_path, overrides), COCO17)
  assert [r['instance_id'] for r in records] == [1]
  assert report.counts == {reason: 1}
  assert 'annotation 99' in report.summary() and '1 skipped' in report.summary()


@pytest.mark.parametrize('case', list(_bad_cases()))
def test_bad_input_is_a_one_line_error_in_strict_mode(case, tmp_path):
  overrides, _, message = _bad_cases()[case]
  path, images = _bad_dataset(tmp_path, overrides)
  with pytest.raises(DataError) as e:
    coco.read_coco(path, images, COCO17, strict=True)
  text = str(e.value)
  assert '\n' not in text
  assert text.startswith(f'{path}: annotation 99: ') and message in text


@pytest.mark.parametrize('strict', [False, True])
@pytest.mark.parametrize('content, message', [
    ('[1, 2]', 'not COCO format (top level is list'),
    ('{"images": []}', "not COCO format (no 'annotations' list)"),
    ('{"images": [', 'not valid JSON'),
])
def test_a_file_that_is_not_coco_format_is_an_error_in_both_modes(tmp_path, strict, content,
                                                                   message):
  path = tmp_path / 'x.json'
  path.write_text(content)
  with pytest.raises(DataError, match=str(path)) as e:
    coco.read_coco(path, tmp_path, COCO17, strict=strict)
  assert message in str(e.value)


def test_a_dataset_with_nothing_usable_is_an_error(tmp_path):
  path, images = _write(tmp_path, [_annotation(5, keypoints=_keypoints(17, v=0))])
  with pytest.raises(DataError, match='no usable person instance.*1 no labelled keypoints'):
    coco.read_coco(path, images, COCO17)


def test_packing_round_trips_through_tfds_array_record(tmp_path):
  images = [{'id': 1, 'file_name': 'a.png', 'width': 64, 'height': 80},
            {'id': 2, 'file_name': 'grey.png', 'width': 48, 'height': 40}]
  img_dir = tmp_path / 'images'
  img_dir.mkdir()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(
      img_dir / 'a.png')
  Image.fromarray(np.full((40, 48), 77, np.uint8), mode='L').save(img_dir / 'grey.png')
  anns = [_annotation(1), _annotation(2, image_id=2, bbox=[2.0, 2.0, 30.0, 30.0]),
          _annotation(3, keypoints=_keypoints(17, v=0))]
  path, img_dir = _write(tmp_path, anns, images)
  cache = tmp_path / 'cache'
  packed = packing.packed_coco(path, img_dir, COCO17, cache_dir=str(cache))
  assert '1 no labelled keypoints' in packed.skip_report()
  source = packed.source('train')
  assert len(source) == 2
  # Records are stored under their positions in the file (annotations 0 and 1 are kept).
  by_index = {int(source[i]['annotation_index']): source[i] for i in range(len(source))}
  records, _ = coco.read_coco(path, img_dir, COCO17)
  for r in records:
    got = by_index[r['annotation_index']]
    for key in ('image_index', 'bbox', 'center', 'scale', 'keypoints', 'keypoints_visible',
                'image_size'):
      np.testing.assert_array_equal(got[key], r[key])
  # Decoded straight to PIL (the crop warps it as it is), with the files' pixels.
  assert all(by_index[i]['image'].mode == 'RGB' for i in by_index)
  np.testing.assert_array_equal(np.asarray(by_index[0]['image']),
                                np.asarray(Image.open(f'{img_dir}/a.png')))
  grey = np.asarray(by_index[1]['image'])
  assert grey.shape == (40, 48, 3) and (grey == 77).all()
  # Second use finds the cache; a changed annotation file is packed anew.
  assert packing.packed_coco(path, img_dir, COCO17, cache_dir=str(cache)).path == packed.path
  _write(tmp_path, anns[:1], images)
  assert packing.packed_coco(path, img_dir, COCO17, cache_dir=str(cache)).path != packed.path


def test_prepare_cli_packs_and_reports_skips(tmp_path):
  anns = [_annotation(1), _annotation(2, keypoints=_keypoints(17, v=0))]
  path, images = _write(tmp_path, anns)
  out = tmp_path / 'packed'
  cmd = [sys.executable, '-m', 'vitpose_jax.data.prepare', '--annotations', path, '--images',
         images, '--schema', 'coco17', '--out', str(out)]
  done = subprocess.run(cmd, capture_output=True, text=True, check=True)
  assert '1 instances kept, 1 skipped: 1 no labelled keypoints' in done.stdout
  assert len(packing.PackedDataset(str(out)).source('train')) == 1
  again = subprocess.run(cmd, capture_output=True, text=True)
  assert again.returncode == 2 and 'already exists' in again.stderr
  strict = subprocess.run(cmd[:-1] + [str(tmp_path / 'strict'), '--strict'], capture_output=True,
                          text=True)
  assert strict.returncode == 2
  assert strict.stderr.strip().splitlines() == [
      f'error: {path}: annotation 2: no keypoint has v > 0']
