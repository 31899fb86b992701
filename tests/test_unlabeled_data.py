"""Unlabelled data (``labels=False``), the ``detections`` source and packed person masks."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from vitpose_jax import skeletons
from vitpose_jax.data import coco, packing, pipeline, sources
from vitpose_jax.data.coco import DataError

COCO17 = skeletons.get('coco17')
WIDTH, HEIGHT = 64, 80


def _annotation(ann_id, keypoints=True, **overrides):
  ann = {'id': ann_id, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
         'bbox': [5.0, 8.0, 40.0, 60.0]}
  if keypoints:
    ann['keypoints'] = [20.0, 30.0, 2] * 17
  ann.update(overrides)
  return ann


def _images(tmp_path, names=('a.png',)):
  folder = tmp_path / 'images'
  folder.mkdir(exist_ok=True)
  for i, name in enumerate(names):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(i).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
  return str(folder)


def _write(tmp_path, annotations, categories=None):
  images = _images(tmp_path)
  path = tmp_path / 'ann.json'
  path.write_text(json.dumps({
      'images': [{'id': 1, 'file_name': 'a.png', 'width': WIDTH, 'height': HEIGHT}],
      'annotations': annotations,
      'categories': categories or [{'id': 1, 'name': 'person', 'keypoints': COCO17.keypoints}]}))
  return str(path), images


def test_unlabelled_reading_keeps_an_instance_without_keypoints_and_zero_visibility(tmp_path):
  path, images = _write(tmp_path, [_annotation(1), _annotation(2, keypoints=False),
                                   _annotation(3, keypoints=False, iscrowd=1)])
  records, report = coco.read_coco(path, images, COCO17, labels=False)
  assert [r['instance_id'] for r in records] == [1, 2]
  assert report.counts == {'crowd': 1}
  for r in records:
    assert r['keypoints'].shape == (17, 2) and r['keypoints_visible'].shape == (17,)
    assert not r['keypoints'].any() and not r['keypoints_visible'].any()
  records, report = coco.read_coco(path, images, COCO17)
  assert [r['instance_id'] for r in records] == [1]
  assert report.counts == {'crowd': 1, 'wrong keypoint count': 1}


def test_unlabelled_reading_takes_the_person_category_of_a_file_without_keypoints(tmp_path):
  path, images = _write(tmp_path, [_annotation(1, keypoints=False)],
                        categories=[{'id': 3, 'name': 'car'}, {'id': 1, 'name': 'person'}])
  (record,), _ = coco.read_coco(path, images, COCO17, labels=False)
  assert record['category_id'] == 1
  with pytest.raises(DataError, match='no category holds keypoints'):
    coco.read_coco(path, images, COCO17)


def _square(x0, y0, size):
  return [x0, y0, x0 + size, y0, x0 + size, y0 + size, x0, y0 + size]


def _uncompressed(mask):
  """pycocotools' uncompressed RLE of a (H, W) mask: column-major runs from 0."""
  flat = mask.ravel(order='F')
  changes = np.flatnonzero(np.diff(flat)) + 1
  edges = np.concatenate([[0], changes, [flat.size]])
  runs = np.diff(edges).tolist()
  return {'size': list(mask.shape), 'counts': ([0] if flat[0] else []) + runs}


def test_segmentations_of_every_form_pack_to_pycocotools_masks(tmp_path):
  blob = np.zeros((HEIGHT, WIDTH), np.uint8)
  blob[20:50, 10:30] = 1
  blob[55:60, 40:45] = 1
  compressed = mask_utils.encode(np.asfortranarray(blob))
  compressed['counts'] = compressed['counts'].decode()
  forms = {
      1: [_square(10, 10, 20)],
      2: [_square(5, 5, 10), _square(30.5, 40, 15)],  # two polygons: one mask
      3: _uncompressed(blob),
      4: compressed,
  }
  annotations = [_annotation(i, segmentation=s) for i, s in forms.items()]
  annotations.append(_annotation(5))  # no segmentation: a record without a mask
  path, images = _write(tmp_path, annotations)
  packed, report = packing.pack_coco(path, images, COCO17, str(tmp_path / 'packed'))
  assert report.kept == 5
  source = packed.source('train')
  by_id = {int(source[i]['annotation_index']) + 1: source[i] for i in range(len(source))}
  reference = COCO(path)
  for ann_id in forms:
    record = by_id[ann_id]
    assert isinstance(record['segmentation'], bytes)
    got = coco.decode_segmentation(record['segmentation'], record['image_size'])
    want = reference.annToMask(reference.anns[ann_id])
    assert got.shape == (HEIGHT, WIDTH) and got.sum() > 0
    np.testing.assert_array_equal(got, want)
  assert 'segmentation' not in by_id[5]


@pytest.mark.parametrize('segmentation', [
    [[1, 2, 3, 4, 5]],  # odd number of coordinates
    [[1, 2, 'x', 4, 5, 6]],
    [[1, 2, float('inf'), 4, 5, 6]],
    {'size': [HEIGHT, WIDTH], 'counts': [10, 20]},  # runs short of the image
    {'size': [HEIGHT + 1, WIDTH], 'counts': [HEIGHT * WIDTH + WIDTH]},
    {'size': [HEIGHT, WIDTH], 'counts': 'PQ'},  # ends inside a run length
    {'size': [HEIGHT, WIDTH], 'counts': 17},
    'polygon',
])
def test_a_malformed_segmentation_is_a_counted_skip_or_a_strict_error(tmp_path, segmentation):
  path, images = _write(tmp_path, [_annotation(1), _annotation(9, segmentation=segmentation)])
  records, report = coco.read_coco(path, images, COCO17)
  assert [r['instance_id'] for r in records] == [1]
  assert report.counts == {'bad segmentation': 1}
  with pytest.raises(DataError, match=f'{path}: annotation 9: '):
    coco.read_coco(path, images, COCO17, strict=True)


def test_empty_or_degenerate_segmentations_give_no_mask(tmp_path):
  path, images = _write(tmp_path, [_annotation(1, segmentation=[]),
                                   _annotation(2, segmentation=[[1, 1, 5, 5]])])
  records, report = coco.read_coco(path, images, COCO17)
  assert report.kept == 2 and not any('segmentation' in r for r in records)


def _detections(tmp_path, entries, name='dets.json'):
  path = tmp_path / name
  path.write_text(json.dumps(entries))
  return str(path)


DETECTIONS = [
    {'file_name': 'a.png', 'bbox': [5, 8, 40, 60], 'score': 0.9, 'category_id': 1},
    {'file_name': 'sub/b.png', 'bbox': [1.5, 2, 20, 30], 'score': 0.3},
    {'file_name': 'a.png', 'bbox': [30, 30, 20, 40], 'score': 0.6},
]


def test_detections_become_unlabelled_instances_above_the_minimum_score(tmp_path):
  images = _images(tmp_path, ('a.png', 'sub/b.png'))
  path = _detections(tmp_path, DETECTIONS)
  cache = str(tmp_path / 'cache')
  spec = dict(source='detections', detections=path, images=images)
  assert not sources.has_labels(spec)
  source = pipeline.open_source(spec, COCO17, cache_dir=cache)
  assert len(source) == 3
  annotations, _ = sources.files(spec, 'train', cache_dir=cache)
  assert annotations.startswith(os.path.join(cache, 'detections', 'dets-'))
  written = json.load(open(annotations))
  assert [(i['file_name'], i['width'], i['height']) for i in written['images']] == [
      ('a.png', WIDTH, HEIGHT), ('sub/b.png', WIDTH, HEIGHT)]
  for i in range(3):
    record = source[i]
    assert not record['keypoints_visible'].any() and record['keypoints'].shape == (17, 2)
  assert len(pipeline.open_source({**spec, 'min_score': 0.5}, COCO17, cache_dir=cache)) == 2
  above, _ = sources.files({**spec, 'min_score': 0.5}, 'train', cache_dir=cache)
  # Annotation ids are the detections' indices in their file.
  assert [a['id'] for a in json.load(open(above))['annotations']] == [0, 2]
  assert len(os.listdir(os.path.join(cache, 'detections'))) == 2  # one file per threshold
  with pytest.raises(DataError, match='detections data spec: labels=True'):
    sources.files({**spec, 'labels': True}, 'train', cache_dir=cache)
  assert sources.files({**spec, 'labels': False}, 'train', cache_dir=cache)[0] == annotations


@pytest.mark.parametrize('field, value, message', [
    ('bbox', [1, 2, 3], r'entry 1: bbox \[1, 2, 3\] is not \[x, y, w, h\]'),
    ('bbox', [1, 2, 3, float('nan')], 'entry 1: bbox'),
    ('score', 'high', "entry 1: score 'high' is not a finite number"),
    ('file_name', None, 'entry 1: file_name None is not a path'),
    ('file_name', 'missing.png', "entry 1: file_name 'missing.png': image file not found"),
])
def test_a_bad_detection_is_an_error_naming_the_file_its_index_and_field(tmp_path, field, value,
                                                                         message):
  images = _images(tmp_path)
  entries = [dict(DETECTIONS[0]), {**DETECTIONS[0], field: value}]
  path = _detections(tmp_path, entries)
  with pytest.raises(DataError, match=f'^{path}: {message}'):
    sources.files(dict(source='detections', detections=path, images=images), 'train',
                  cache_dir=str(tmp_path / 'cache'))


def test_has_labels_and_the_labels_field_of_any_spec(tmp_path):
  spec = dict(source='coco', annotations='a.json', images='images')
  assert sources.has_labels(spec) and sources.has_labels({**spec, 'labels': True})
  assert not sources.has_labels({**spec, 'labels': False})
  assert sources.files({**spec, 'labels': False}, 'train') == ('a.json', 'images')
  synthetic = dict(source='synthetic', population='adult', num=2, labels=False)
  assert not sources.has_labels(synthetic)
  with pytest.raises(DataError, match="coco data spec: labels 'no' is not true or false"):
    sources.has_labels({**spec, 'labels': 'no'})


def test_labels_enter_the_packing_cache_key(tmp_path):
  path, images = _write(tmp_path, [_annotation(1), _annotation(2, keypoints=False)])
  spec = dict(source='coco', annotations=path, images=images)
  labelled = pipeline.open_source(spec, COCO17, cache_dir=str(tmp_path))
  unlabelled = pipeline.open_source({**spec, 'labels': False}, COCO17, cache_dir=str(tmp_path))
  assert (len(labelled), len(unlabelled)) == (1, 2)
  assert len(os.listdir(tmp_path / 'packed')) == 2
  assert labelled[0]['keypoints_visible'].any() and not unlabelled[0]['keypoints_visible'].any()


def test_unlabelled_synthetic_instances_batch_as_two_views_with_their_masks(tmp_path):
  """The mean-teacher input path end to end: spec → packing → TwoViews → batches."""
  from vitpose_jax.data import transforms

  spec = dict(source='synthetic', population='adult', num=4, seed=2, labels=False)
  source = pipeline.open_source(spec, COCO17, cache_dir=str(tmp_path))
  assert all(isinstance(source[i]['segmentation'], bytes) for i in range(len(source)))
  strong = transforms.AugmentConfig(brightness=0.3, blur=1.5, noise=8.0)
  views = transforms.TwoViews(COCO17, (64, 48), transforms.AugmentConfig(), strong)
  task = pipeline.TaskData('target', COCO17, source, 4, (views,))
  batch = next(iter(pipeline.train_dataset([task], seed=0)))['target']
  assert batch['image'].shape == batch['image_weak'].shape == (4, 64, 48, 3)
  assert batch['view_transform'].shape == (4, 3, 3) and batch['mask_distance'].shape == (4, 64, 48)
  assert 'segmentation' not in batch and not batch['keypoint_weights'].any()
  assert (batch['mask_weight'] == 1).all()


def _many_images_file(tmp_path, num_images=20):
  """A COCO file of ``num_images`` images (ids 100, 101, ...), two labelled people each, plus a
  malformed annotation."""
  names = [f'{i}.png' for i in range(num_images)]
  folder = _images(tmp_path, names)
  annotations = [{'id': 10 * i + j, 'image_id': 100 + i, 'category_id': 1, 'iscrowd': 0,
                  'bbox': [5.0, 8.0, 40.0, 60.0], 'keypoints': [20.0, 30.0, 2] * 17}
                 for i in range(num_images) for j in range(2)]
  data = {'images': [{'id': 100 + i, 'file_name': n, 'width': WIDTH, 'height': HEIGHT}
                     for i, n in enumerate(names)],
          'annotations': annotations + ['not an annotation'],
          'categories': [{'id': 1, 'name': 'person'}]}
  path = tmp_path / 'people.json'
  path.write_text(json.dumps(data))
  return str(path), folder


def test_subsets_of_adjacent_ranges_split_the_images_exactly_and_keep_all_their_people(tmp_path):
  path, folder = _many_images_file(tmp_path)
  spec = dict(source='coco', annotations=path, images=folder)
  cache = str(tmp_path / 'cache')
  parts = []
  for subset in ((0, 0.1), (0.1, 1.0)):
    annotations, _ = sources.files({**spec, 'subset': subset}, 'train', cache_dir=cache)
    data = json.loads(open(annotations).read())
    image_ids = {image['id'] for image in data['images']}
    parts.append(image_ids)
    people = [a for a in data['annotations'] if isinstance(a, dict)]
    assert sorted(a['image_id'] for a in people) == sorted(2 * list(image_ids))
    # The malformed annotation stays in every part, for the reader to count as a skip.
    assert 'not an annotation' in data['annotations']
    assert data['categories'] == [{'id': 1, 'name': 'person'}]
  assert [len(p) for p in parts] == [2, 18]
  assert parts[0] | parts[1] == set(range(100, 120)) and not parts[0] & parts[1]
  # Pseudo-random, not the file's first images.
  assert parts[0] != {100, 101}
  # The same range gives the same file; the instances are packed from it.
  again, _ = sources.files({**spec, 'subset': [0, 0.1]}, 'train', cache_dir=cache)
  assert json.loads(open(again).read())['images'] == [
      image for image in json.loads(open(path).read())['images'] if image['id'] in parts[0]]
  source = pipeline.open_source({**spec, 'subset': (0, 0.1)}, COCO17, cache_dir=cache)
  assert len(source) == 4
  # Positions in the part's file, whose image entries are the source file's.
  kept = json.loads(open(again).read())['images']
  assert {kept[int(source[i]['image_index'])]['id'] for i in range(4)} == parts[0]


@pytest.mark.parametrize('subset', [(0.5, 0.5), (-0.1, 0.5), (0, 1.5), (0.2,), 'all',
                                    (0, float('nan')), (True, 1)])
def test_a_bad_subset_is_an_error_naming_the_field_and_value(tmp_path, subset):
  spec = dict(source='coco', annotations='a.json', images='.', subset=subset)
  with pytest.raises(DataError, match=r'^coco data spec: subset .* is not \(start, stop\) '
                     r'fractions with 0 <= start < stop <= 1$'):
    sources.has_labels(spec)


def test_an_empty_subset_and_errors_in_a_part_name_the_users_file(tmp_path):
  path, folder = _many_images_file(tmp_path, num_images=10)
  spec = dict(source='coco', annotations=path, images=folder)
  cache = str(tmp_path / 'cache')
  with pytest.raises(DataError, match=r'people.json: subset \(0, 0.04\) keeps none of its 10 '
                     r'images: widen the range$'):
    sources.files({**spec, 'subset': (0, 0.04)}, 'train', cache_dir=cache)
  os.remove(os.path.join(folder, '3.png'))
  # Strict reading stops at the missing image: the message names the file the part came from.
  with pytest.raises(DataError) as error:
    pipeline.open_source({**spec, 'subset': (0, 1)}, COCO17, strict=True, cache_dir=cache)
  assert str(error.value).startswith(f'{path} (subset (0, 1)): annotation ')
  assert 'cache' not in str(error.value).split(':')[0]
