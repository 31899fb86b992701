"""The synthetic generator: byte-identical output across versions, determinism, COCO output per
population, populations as records, labels on drawn content, the CLI."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from vitpose_jax import skeletons, synthetic
from vitpose_jax.data import coco, sources
from vitpose_jax.synthetic import body, populations, render, scene, styles

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


# Digests of generate()'s files, computed with the code before the generator became the
# vitpose_jax.synthetic package (GENERATOR_VERSION 1, vitpose_jax/data/synthetic.py at f57cefc):
# population → (split, seed, num, shard, sha256 over each file's name and sha256). A change here
# changes every cached dataset and the data behind shipped models: bump GENERATOR_VERSION and
# pin the new bytes.
VERSION_1_DIGESTS = {
    'adult': (
        ('train', 0, 3, 0,
         '37a74c762ebcebc353524ff461575c2acdec5d4641b902354e49d6605159b282'),
        ('val', 5, 3, 0,
         'f326f84ab0a461d12620d108028f105fe97e9a8b6c66c51e6e2a97b3d063710f'),
        ('train', 2, 2, 1,
         'c05de072325f75a0a9602daf9eb632f4ca2e6f1563bb9837ed006242bf766aa2'),
        ('train', 1, 16, 0,
         'b1b7a9a2843b05a3d2f4f0af64721045a6425c46a38a46701c06b820f49250b4'),
    ),
    'adult_wholebody': (
        ('train', 0, 3, 0,
         '4cea67995d0f24dafb02e698aa70d41969a1c39ae4aadfbf55f8aa980833923a'),
        ('val', 5, 3, 0,
         'df8135f355a81506ac867ab5301129e8d2583c8ea36621cea4c9af9c0d3fc219'),
        ('train', 2, 2, 1,
         'c8ca42974fec8266c20737209da55320885bfd1ba945924cd709dfc9918a724b'),
        ('train', 1, 16, 0,
         '4506eab33a8f34057ab748a792f1805276450f33e392d1cf6193491e524ef562'),
    ),
    'infant': (
        ('train', 0, 3, 0,
         'ec9f8706e864181417c29bd5498d65b411f8cae1b935a145353085b46dde0dbe'),
        ('val', 5, 3, 0,
         'a6f97d55779319f84da8c5f7e26a21ef77419e8cd5430f063e1ddf712aa46749'),
        ('train', 2, 2, 1,
         '984df7cbe87bb4a52f5956baca3929341fda8039e98ab17333c31f00f42cdb8b'),
        ('train', 1, 16, 0,
         '885eeed2b30773666b106399b3e4cb38b914a5466bf4e886a6d1a33c0de48b0f'),
    ),
    'wheelchair': (
        ('train', 0, 3, 0,
         'd7c47f528a386932873d9d7b194793f45231cfbdce57e6cc0a42d477256bfcf8'),
        ('val', 5, 3, 0,
         '192bd1bc5452fd0feb10ee17c3d0c0d138183cccbfc9c05a6d816d909296daab'),
        ('train', 2, 2, 1,
         'd3afa49f6e7f2046c9dff54d91f3fb29e9c595579aa3ae3ccbcc931c15df5074'),
        ('train', 1, 16, 0,
         '2cc5b452c438ba5833c5e770e0680b5530e2b6db68b0fbf5921b147ccee210f1'),
    ),
    # Pinned when the population was added, still at GENERATOR_VERSION 1.
    'infant_coco': (
        ('train', 0, 3, 0,
         'ec1143de1020ee2ee7754887e79c58907a9eb730ed352b3b7d52868b7b425a90'),
        ('val', 5, 3, 0,
         'a6b0386ea1715864a391f76ae4ddcdb18b22d277f2cfdb164ab977fa50436724'),
        ('train', 2, 2, 1,
         '187d739ba645482ff36f33195da7bbd09da5327f2f1d89e8758a37ffc0a0fe8f'),
        ('train', 1, 16, 0,
         '136f2f41fef09c54201de085db34d82df6be28edcedc74db73d48812a11307d0'),
    ),
}


def _digest(out_dir) -> str:
  h = hashlib.sha256()
  for name, data in _files(out_dir).items():
    h.update(name.encode() + b'\0' + hashlib.sha256(data).hexdigest().encode() + b'\n')
  return h.hexdigest()


@pytest.mark.parametrize('population', POPULATIONS)
def test_the_generated_bytes_are_those_of_generator_version_1(tmp_path, population):
  assert synthetic.GENERATOR_VERSION == 1
  for k, (split, seed, num, shard, want) in enumerate(VERSION_1_DIGESTS[population]):
    synthetic.generate(tmp_path / str(k), population, split, num, seed, shard=shard)
    assert _digest(tmp_path / str(k)) == want, (population, split, seed, num, shard)


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
  schema = skeletons.get(synthetic.POPULATIONS[population].schema)
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


def test_infant_coco_labels_infants_with_coco17(datasets):
  _, dataset = datasets['infant_coco']
  coco17 = skeletons.get('coco17')
  assert dataset['info']['schema'] == 'coco17'
  assert dataset['categories'][0]['keypoints'] == list(coco17.keypoints)
  assert len(coco17.keypoints) == 17
  for ann in dataset['annotations']:
    assert len(ann['keypoints']) == 3 * 17
  infant, infant_coco = synthetic.POPULATIONS['infant'], synthetic.POPULATIONS['infant_coco']
  assert dataclasses.replace(infant_coco, name='infant', schema=infant.schema,
                             stream=infant.stream) == infant


def test_a_new_population_is_a_record(tmp_path, monkeypatch):
  monkeypatch.setattr(populations, 'POPULATIONS', dict(populations.POPULATIONS))
  adult = synthetic.POPULATIONS['adult']
  child = dataclasses.replace(
      adult, name='child', stream=99, crowd=0., occluder=0.,
      build=dataclasses.replace(populations.ADULT, head=0.07, thigh=0.2, shank=0.2))
  populations.register(child)
  synthetic.generate(tmp_path / 'child', 'child', 'train', 2, seed=0)
  synthetic.generate(tmp_path / 'adult', 'adult', 'train', 2, seed=0)
  with open(tmp_path / 'child' / 'annotations.json') as f:
    dataset = json.load(f)
  assert dataset['info']['population'] == 'child' and dataset['info']['schema'] == 'coco17'
  assert len(dataset['images']) == 2  # crowd 0: one person per image
  assert _files(tmp_path / 'child')['images/000000000001.jpg'] != _files(
      tmp_path / 'adult')['images/000000000001.jpg']
  # Worker processes start afresh, without the registration: they are handed the record.
  synthetic.generate_datasets([('child', 'val', 2, 0), ('child', 'train', 1, 0)],
                              cache_dir=str(tmp_path / 'cache'), workers=2)
  annotations, _ = synthetic.dataset('child', 'val', 2, 0, str(tmp_path / 'cache'))
  with open(annotations) as f:
    assert json.load(f)['info']['population'] == 'child'
  with pytest.raises(ValueError, match="stream 99 is 'child'"):
    populations.register(dataclasses.replace(child, name='toddler'))
  with pytest.raises(ValueError, match="population 'child' is already registered"):
    populations.register(child)


@pytest.mark.parametrize('change, message', [
    (dict(pose='dancing'), "pose 'dancing' is not one of everyday, lying, seated"),
    (dict(outfit='armour'), "outfit 'armour' is not one of"),
    (dict(background='beach'), "background 'beach' is not one of room, blanket"),
    (dict(furniture={'sit': 'sofa'}), "furniture for 'sit', 'sofa', is not one of"),
    (dict(occluders=('cloud',)), r"occluders \['cloud'\] must be some of"),
    (dict(crowd=1.5), 'crowd 1.5 is not a probability'),
])
def test_a_population_record_naming_an_unknown_part_is_refused(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(synthetic.POPULATIONS['adult'], name='odd', **change)


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
  fig, _ = scene._person(np.random.default_rng(0), synthetic.POPULATIONS['adult'])
  flip = np.diag([1., -1., -1.])   # body (left, up, forward) -> camera (x, y, z)
  for yaw, left_on_image_right in ((0., True), (180., False)):
    view = flip @ body.ry(yaw)
    x = {n: (fig.points[n] @ view.T)[0] for n in ('left_shoulder', 'right_shoulder', 'left_hip',
                                                   'right_hip')}
    assert (x['left_shoulder'] > x['right_shoulder']) == left_on_image_right
    assert (x['left_hip'] > x['right_hip']) == left_on_image_right


def test_a_style_changes_the_look_of_the_same_draws_and_is_recorded(tmp_path, monkeypatch):
  synthetic.generate(tmp_path / 'plain', 'infant_coco', 'val', 2, 0)
  synthetic.generate(tmp_path / 'shifted', 'infant_coco', 'val', 2, 0, style='shifted')
  plain, shifted = _files(tmp_path / 'plain'), _files(tmp_path / 'shifted')
  assert plain['images/000000000001.jpg'] != shifted['images/000000000001.jpg']
  with open(tmp_path / 'plain' / 'annotations.json') as f:
    plain_json = json.load(f)
  with open(tmp_path / 'shifted' / 'annotations.json') as f:
    shifted_json = json.load(f)
  assert 'style' not in plain_json['info'] and shifted_json['info']['style'] == 'shifted'
  assert plain_json['annotations'][0]['keypoints'] != shifted_json['annotations'][0]['keypoints']
  # A style that only changes the camera's colour draws from its own stream: the people, their
  # labels and even the sensor noise are plain's.
  monkeypatch.setattr(styles, 'STYLES', dict(styles.STYLES))
  grey = styles.register(dataclasses.replace(styles.PLAIN, name='grey', stream=9, monochrome=1.))
  synthetic.generate(tmp_path / 'grey', 'infant_coco', 'val', 2, 0, style=grey)
  with open(tmp_path / 'grey' / 'annotations.json') as f:
    grey_json = json.load(f)
  assert grey_json['info'].pop('style') == 'grey' and grey_json == plain_json
  with Image.open(tmp_path / 'grey' / 'images' / '000000000001.jpg') as im:
    pixels = np.asarray(im, np.int16)
  assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() < 3  # grey up to sensor noise and JPEG
  with pytest.raises(ValueError, match="stream 9 is 'grey'"):
    styles.register(dataclasses.replace(grey, name='grey2'))


def test_a_style_has_its_own_cache_path_and_unknown_styles_are_refused(tmp_path):
  cache = str(tmp_path)
  spec = dict(source='synthetic', population='adult', num=1, seed=0)
  plain, _ = sources.files(spec, 'val', cache_dir=cache)
  shifted, images = sources.files({**spec, 'style': 'shifted'}, 'val', cache_dir=cache)
  root = os.path.join(cache, 'synthetic', f'v{synthetic.GENERATOR_VERSION}')
  assert plain == os.path.join(root, 'adult-val-n1-s0', 'annotations.json')
  assert shifted == os.path.join(root, 'adult-shifted-val-n1-s0', 'annotations.json')
  assert os.path.isdir(images)
  with open(shifted) as f:
    assert json.load(f)['info']['style'] == 'shifted'
  assert sources.files({**spec, 'style': 'plain'}, 'val', cache_dir=cache)[0] == plain
  with pytest.raises(coco.DataError, match="unknown synthetic style 'cartoon'; known: plain, "
                                           'shifted'):
    sources.files({**spec, 'style': 'cartoon'}, 'val', cache_dir=cache)
  with pytest.raises(coco.DataError, match="unknown synthetic style 'cartoon'"):
    synthetic.generate_datasets([('adult', 'val', 1, 0, 'cartoon')], cache_dir=cache)
  with pytest.raises(ValueError, match="unknown style 'cartoon'; choose from plain, shifted"):
    synthetic.generate(tmp_path / 'd', 'adult', 'val', 1, 0, style='cartoon')


@pytest.mark.parametrize('change, message', [
    (dict(cloth_patterns=('paisley',)), r"patterns \['paisley'\] are not some of"),
    (dict(light_x=(0., 1.)), 'light_x and light_y are set together'),
    (dict(blur=(1., 2.)), 'blur, gain and noise are set together'),
    (dict(monochrome=2.), 'monochrome 2.0 is not a probability'),
    (dict(jpeg_quality=0), 'jpeg_quality 0 is not in 1-95'),
])
def test_a_style_record_with_bad_numbers_is_refused(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(styles.PLAIN, name='odd', stream=99, **change)


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
  return subprocess.run([sys.executable, '-m', 'vitpose_jax.synthetic', *args],
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_writes_the_dataset_and_a_preview(tmp_path):
  preview = tmp_path / 'grid.png'
  done = _cli('--out', str(tmp_path / 'd'), '--population', 'wheelchair', '--split', 'val',
              '--num', '3', '--seed', '2', '--style', 'shifted', '--preview', str(preview))
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == str(tmp_path / 'd' / 'annotations.json')
  with open(tmp_path / 'd' / 'annotations.json') as f:
    assert json.load(f)['info']['style'] == 'shifted'
  with Image.open(preview) as im:
    assert im.format == 'PNG' and min(im.size) >= 256


@pytest.mark.parametrize('args', [
    ('--population', 'giant', '--split', 'train', '--num', '2'),
    ('--population', 'adult', '--split', 'train', '--num', '0'),
    ('--population', 'adult', '--split', 'train', '--num', 'many'),
    ('--population', 'adult', '--split', 'train', '--num', '2', '--seed', '-3'),
    ('--population', 'adult', '--num', '2'),
    ('--population', 'adult', '--split', 'train', '--num', '2', '--style', 'cartoon'),
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
