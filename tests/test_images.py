"""Reading images (issue 17, kind 5): bit depths, modes, EXIF orientation against the annotation
file's width and height, the pixel limit; the same pixels through packing, evaluation and predict.

Every image is written by the test itself."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from vitpose_jax import checkpoint, models, skeletons
from vitpose_jax.data import coco, images, packing
from vitpose_jax.data.coco import DataError
from vitpose_jax.data.images import ImageError, read_image
from vitpose_jax.evaluation import KeypointEvaluator
from vitpose_jax.predict import Predictor

COCO17 = skeletons.get('coco17')


def _exif(orientation):
  exif = Image.Exif()
  exif[0x0112] = orientation
  return exif


def _rgb(seed=0, shape=(20, 30)):
  return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# Bit depths and modes.

def test_16_bit_greyscale_keeps_its_high_byte_as_opencv_does(tmp_path):
  values = np.array([[0, 255, 256, 4660], [20000, 40000, 65280, 65535]], np.uint16)
  Image.fromarray(values).save(tmp_path / 'g16.png')
  assert Image.open(tmp_path / 'g16.png').mode == 'I;16'
  got = np.asarray(read_image(tmp_path / 'g16.png'))
  assert got.dtype == np.uint8 and got.shape == (2, 4, 3)
  expected = [[0, 0, 1, 18], [78, 156, 255, 255]]
  for channel in range(3):
    np.testing.assert_array_equal(got[..., channel], expected)


def test_32_bit_integer_and_float_images_are_scaled_not_clipped(tmp_path):
  # Values that fit 16 bits are 16-bit data in Pillow's 32-bit container.
  Image.fromarray(np.array([[0, 256, 65535]], np.int32)).save(tmp_path / 'i16.tiff')
  np.testing.assert_array_equal(np.asarray(read_image(tmp_path / 'i16.tiff'))[..., 0],
                                [[0, 1, 255]])
  # Wider ranges are stretched from [min, max].
  Image.fromarray(np.array([[-100, 0, 100_000, 1_000_000]], np.int32)).save(tmp_path / 'i32.tiff')
  np.testing.assert_array_equal(np.asarray(read_image(tmp_path / 'i32.tiff'))[..., 1],
                                [[0, 0, 26, 255]])
  Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / 'unit.tiff')
  np.testing.assert_array_equal(np.asarray(read_image(tmp_path / 'unit.tiff'))[..., 2],
                                [[0, 128, 255]])
  Image.fromarray(np.array([[-2.0, 0.0, np.nan, 2.0]], np.float32)).save(tmp_path / 'wide.tiff')
  np.testing.assert_array_equal(np.asarray(read_image(tmp_path / 'wide.tiff'))[..., 0],
                                [[0, 128, 0, 255]])


@pytest.mark.parametrize('mode', ['L', 'P', 'RGBA', 'LA', 'CMYK', '1'])
def test_other_modes_become_rgb_by_pillows_conversion(tmp_path, mode):
  source = Image.fromarray(_rgb()).convert(mode)
  path = tmp_path / ('x.jpg' if mode == 'CMYK' else 'x.png')
  source.save(path, **({'quality': 100} if mode == 'CMYK' else {}))
  image = read_image(path)
  assert image.mode == 'RGB'
  np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(path).convert('RGB')))


# EXIF orientation.

@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_exif_transpose_does(tmp_path, orientation):
  path = tmp_path / 'x.png'
  Image.fromarray(_rgb()).save(path, exif=_exif(orientation))
  expected = ImageOps.exif_transpose(Image.open(path))
  np.testing.assert_array_equal(np.asarray(read_image(path)), np.asarray(expected))


def test_orientation_6_turns_a_jpeg_clockwise(tmp_path):
  stored = np.zeros((20, 30, 3), np.uint8)
  stored[:4, :4] = 255  # the stored top-left corner
  Image.fromarray(stored).save(tmp_path / 'x.jpg', exif=_exif(6), quality=95)
  upright = np.asarray(read_image(tmp_path / 'x.jpg'))
  assert upright.shape == (30, 20, 3)
  assert upright[:4, -4:].min() > 200 and upright[:, :-6].max() < 60  # now the top-right corner


def test_the_orientation_whose_size_the_annotations_give_wins(tmp_path):
  path = tmp_path / 'x.jpg'
  Image.fromarray(_rgb()).save(path, exif=_exif(6))
  assert read_image(path).size == (20, 30)  # upright when nothing says otherwise
  assert read_image(path, (20, 30)).size == (20, 30)
  # Labels made on the stored pixels (a tool that ignores EXIF): the stored orientation.
  assert read_image(path, (30, 20)).size == (30, 20)
  np.testing.assert_array_equal(np.asarray(read_image(path, (30, 20))),
                                np.asarray(Image.open(path)))
  assert read_image(path, (0, None)).size == (20, 30)  # placeholders: unknown
  with pytest.raises(ImageError) as e:
    read_image(path, (31, 20))
  assert str(e.value) == (f'{path}: is 30x20 (20x30 after its EXIF orientation 6), but the '
                          "annotation file's images entry gives width 31, height 20")


def _coco_file(tmp_path, width, height, file_name='x.jpg'):
  ann = {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'bbox': [2.0, 2.0, 12.0, 16.0],
         'keypoints': [8.0, 6.0, 2] + [0.0, 0.0, 0] * 16, 'num_keypoints': 1}
  path = tmp_path / 'ann.json'
  path.write_text(json.dumps({
      'images': [{'id': 1, 'file_name': file_name, 'width': width, 'height': height}],
      'annotations': [ann], 'categories': [{'id': 1, 'name': 'person'}]}))
  return str(path)


def test_read_coco_and_packing_use_the_orientation_of_the_annotated_size(tmp_path):
  Image.fromarray(_rgb()).save(tmp_path / 'x.jpg', exif=_exif(6))  # stored 30x20, upright 20x30
  for width, height in [(20, 30), (30, 20)]:
    ann = _coco_file(tmp_path, width, height)
    (record,), _ = coco.read_coco(ann, tmp_path, COCO17)
    assert tuple(record['image_size']) == (width, height)
    out = tmp_path / f'packed_{width}'
    packed, _ = packing.pack_coco(ann, tmp_path, COCO17, str(out))
    image = packed.source('train')[0]['image']
    np.testing.assert_array_equal(np.asarray(image),
                                  np.asarray(read_image(tmp_path / 'x.jpg', (width, height))))


def test_a_size_that_fits_neither_orientation_is_a_counted_skip_or_a_one_line_error(tmp_path):
  Image.fromarray(_rgb()).save(tmp_path / 'x.jpg', exif=_exif(6))
  ann = _coco_file(tmp_path, 640, 480)
  with pytest.raises(DataError) as e:
    coco.read_coco(ann, tmp_path, COCO17, strict=True)
  assert str(e.value) == (f'{ann}: annotation 1: {tmp_path / "x.jpg"}: is 30x20 (20x30 after '
                          "its EXIF orientation 6), but the annotation file's images entry gives "
                          'width 640, height 480')
  with pytest.raises(DataError, match=r'1 bad image \(e\.g\. annotation 1: .*width 640'):
    coco.read_coco(ann, tmp_path, COCO17)


# The pixel limit.

def test_an_image_over_the_limit_is_named_in_one_line(tmp_path, monkeypatch):
  path = tmp_path / 'x.png'
  Image.fromarray(_rgb()).save(path)
  monkeypatch.setenv(images.MAX_PIXELS_ENV, '599')
  with pytest.raises(ImageError) as e:
    read_image(path)
  assert str(e.value) == (f'{path}: 30x20 = 600 pixels is over the limit of 599 (set '
                          'VITPOSE_JAX_MAX_IMAGE_PIXELS to a larger number, or 0 for no limit, '
                          'to read it)')
  monkeypatch.setenv(images.MAX_PIXELS_ENV, '600')
  assert read_image(path).size == (30, 20)
  monkeypatch.setenv(images.MAX_PIXELS_ENV, 'lots')
  with pytest.raises(ValueError, match="VITPOSE_JAX_MAX_IMAGE_PIXELS='lots' is not a whole"):
    read_image(path)


def test_a_raised_limit_reads_what_pillows_own_limit_refuses(tmp_path, monkeypatch):
  path = tmp_path / 'x.png'
  Image.fromarray(_rgb()).save(path)
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # Pillow refuses over 200 pixels
  monkeypatch.setenv(images.MAX_PIXELS_ENV, '0')
  assert read_image(path).size == (30, 20)
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  monkeypatch.delenv(images.MAX_PIXELS_ENV)
  assert read_image(path).size == (30, 20)  # under the default limit


def test_an_over_limit_image_is_a_reported_skip_not_a_corrupt_one(tmp_path, monkeypatch):
  Image.fromarray(_rgb()).save(tmp_path / 'x.png')
  ann = _coco_file(tmp_path, 30, 20, 'x.png')
  monkeypatch.setenv(images.MAX_PIXELS_ENV, '100')
  with pytest.raises(DataError) as e:
    coco.read_coco(ann, tmp_path, COCO17)
  assert 'bad image (e.g. annotation 1: ' in str(e.value)
  assert 'is over the limit of 100' in str(e.value) and 'corrupt' not in str(e.value)
  done = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.data.prepare', '--annotations', ann, '--images',
       str(tmp_path), '--schema', 'coco17', '--out', str(tmp_path / 'packed'), '--strict'],
      capture_output=True, text=True, env={**os.environ, images.MAX_PIXELS_ENV: '100'})
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      f'error: {ann}: annotation 1: {tmp_path / "x.png"}: 30x20 = 600 pixels is over the limit '
      'of 100 (set VITPOSE_JAX_MAX_IMAGE_PIXELS to a larger number, or 0 for no limit, to read it)']


# Packing stores what read_image returns.

def test_packing_keeps_a_file_that_needs_nothing_and_re_encodes_the_others(tmp_path):
  Image.fromarray(_rgb()).save(tmp_path / 'plain.jpg')
  data = (tmp_path / 'plain.jpg').read_bytes()
  assert images.packed_bytes(tmp_path / 'plain.jpg') == data
  Image.fromarray(_rgb()).save(tmp_path / 'turned.jpg', exif=_exif(3))
  Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp_path / 'g16.png')
  for name in ('turned.jpg', 'g16.png'):
    data = images.packed_bytes(tmp_path / name)
    np.testing.assert_array_equal(np.asarray(images.decode_packed(data)),
                                  np.asarray(read_image(tmp_path / name)))
    assert data.startswith(b'\x89PNG')
  # Stored pixels that carry an orientation tag are re-encoded even when kept as stored, so that
  # no reader applies the tag to them later.
  assert images.packed_bytes(tmp_path / 'turned.jpg', (30, 20)).startswith(b'\x89PNG')


def test_a_folder_packed_by_an_older_version_is_named(tmp_path):
  (tmp_path / 'pose_instances' / '1.0.0').mkdir(parents=True)
  version = re.escape(f'{packing.PACK_VERSION}.0.0')
  with pytest.raises(DataError, match=rf'no dataset of packing version {version} \(it holds '
                                      r'1\.0\.0; pack it again\)'):
    packing.PackedDataset(str(tmp_path)).source('train')


# The same pixels reach the model in evaluation and predict.

class _DotFinder(Predictor):
  """A fake model that looks at the pixels: every keypoint's heatmap peaks at the centroid of the
  crop's brighter half, so a result lands on a label only if the labelled pixels reached it."""

  def heatmaps(self, task, pixels, *, flip_test=None):
    brightness = np.asarray(pixels, np.float64).sum(-1)
    peaks = []
    for b in brightness:
      weight = b - b.min()
      ys, xs = np.nonzero(weight >= 0.5 * weight.max())
      peaks.append([xs.mean(), ys.mean()])
    k = self.config.task(task).num_keypoints
    heatmaps, _ = self.config.codec.encode(np.repeat(np.array(peaks)[:, None], k, axis=1),
                                           np.ones((len(peaks), k)))
    return np.asarray(heatmaps)


_DOT = (30.0, 20.0)  # (x, y) in the upright 48x64 image


def _dot(scale=1.0, background=0.0):
  y, x = np.mgrid[:64, :48]
  return background + scale * np.exp(-((x - _DOT[0]) ** 2 + (y - _DOT[1]) ** 2) / (2 * 2.0 ** 2))


def _dot_dataset(tmp_path, kind):
  if kind == 'exif':  # the upright dot, stored turned back and tagged with orientation 6
    upright = np.repeat(np.uint8(np.rint(_dot(230.0, 10.0)))[..., None], 3, axis=-1)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    stored.save(tmp_path / 'dot.jpg', exif=_exif(6), quality=95)
    name = 'dot.jpg'
  else:  # a 16-bit greyscale PNG whose every value is above 255
    Image.fromarray(np.uint16(np.rint(_dot(40000.0, 20000.0)))).save(tmp_path / 'dot.png')
    name = 'dot.png'
  ann = {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'area': 1280.0,
         'bbox': [14.0, 4.0, 32.0, 40.0], 'keypoints': [*_DOT, 2] + [0.0, 0.0, 0] * 16,
         'num_keypoints': 1}
  path = tmp_path / 'dot.json'
  path.write_text(json.dumps({
      'images': [{'id': 1, 'file_name': name, 'width': 48, 'height': 64}],
      'annotations': [ann], 'categories': [{'id': 1, 'name': 'person'}]}))
  return str(path)


@pytest.fixture(scope='module')
def coco_model():
  return models.create_model(models.model_config('nano', {'coco': 'coco17'}))


@pytest.mark.parametrize('kind', ['exif', '16bit'])
def test_evaluation_sees_the_pixels_the_labels_were_made_on(tmp_path, coco_model, kind):
  annotations = _dot_dataset(tmp_path, kind)
  metrics = KeypointEvaluator(task='coco', data=dict(
      source='coco', annotations=annotations, images=str(tmp_path))).run(
          _DotFinder(coco_model, flip_test=False))
  assert metrics['coco/AP'] == pytest.approx(1.0)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  checkpoint.save_model(path, models.create_model(models.model_config('nano', {'coco': 'coco17'})))
  return path


def _predict(run_dir, image, out, capsys):
  from vitpose_jax import predict

  code = predict.main(['--workdir', run_dir, '--task', 'coco', '--image', str(image),
                       '--out', str(out), '--no-flip'])
  return code, capsys.readouterr().err


def test_predict_reads_16_bit_and_turned_images_as_their_8_bit_upright_equivalents(
    run_dir, tmp_path, capsys):
  values = np.uint16(np.rint(_dot(40000.0, 20000.0)))
  Image.fromarray(values).save(tmp_path / 'g16.png')
  Image.fromarray(np.repeat(np.uint8(values >> 8)[..., None], 3, axis=-1)).save(tmp_path / 'g8.png')
  upright = _rgb(1, (64, 48))
  Image.fromarray(upright).save(tmp_path / 'upright.png')
  Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / 'turned.png',
                                                                     exif=_exif(6))
  results = {}
  for name in ('g16', 'g8', 'upright', 'turned'):
    code, err = _predict(run_dir, tmp_path / f'{name}.png', tmp_path / f'{name}.json', capsys)
    assert code == 0, err
    results[name] = json.loads((tmp_path / f'{name}.json').read_text())['instances']
  assert results['g16'] == results['g8']
  assert results['turned'] == results['upright']
  assert results['upright'][0]['bbox'] == [0.0, 0.0, 48.0, 64.0]


def test_predict_names_an_image_over_the_limit_in_one_line(run_dir, tmp_path, capsys,
                                                           monkeypatch):
  Image.fromarray(_rgb()).save(tmp_path / 'x.png')
  monkeypatch.setenv(images.MAX_PIXELS_ENV, '100')
  code, err = _predict(run_dir, tmp_path / 'x.png', tmp_path / 'x.json', capsys)
  assert code == 2
  assert err.strip().splitlines() == [
      f'error: {tmp_path / "x.png"}: 30x20 = 600 pixels is over the limit of 100 (set '
      'VITPOSE_JAX_MAX_IMAGE_PIXELS to a larger number, or 0 for no limit, to read it)']
  assert not (tmp_path / 'x.json').exists()

