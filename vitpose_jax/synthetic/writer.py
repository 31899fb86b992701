"""The generator's output: a COCO-format dataset of rendered scenes, and a preview sheet of one.

See the package docstring for the files and fields written.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from vitpose_jax import skeletons
from vitpose_jax.data import coco
from vitpose_jax.synthetic import populations, render, styles
from vitpose_jax.synthetic.populations import Population
from vitpose_jax.synthetic.scene import Instance, render_scene
from vitpose_jax.synthetic.styles import Style

# Synthetic seeds from here on are test seeds (see the package docstring).
TEST_SEED_START = 1000

# Enters the data cache key and shipped models' provenance: bump on any change to the generated
# bytes (tests/test_synthetic.py pins them for version 1).
GENERATOR_VERSION = 1

SPLITS = ('train', 'val')

IMAGE_DIR = 'images'
ANNOTATION_FILE = 'annotations.json'


def _rng(seed: int, split: str, population: Population, index: int, shard: int = 0
         ) -> np.random.Generator:
  # Shard 0 keeps the key it had before datasets were sharded, so its cached data stays valid.
  return np.random.default_rng(np.random.SeedSequence(
      [seed, SPLITS.index(split), population.stream, index] + ([shard] if shard else [])))


def _box(points: np.ndarray) -> list[float]:
  """[x, y, w, h] around (n, 2) points."""
  lo, hi = points.min(axis=0), points.max(axis=0)
  return [round(float(lo[0]), 2), round(float(lo[1]), 2), round(float(hi[0] - lo[0]), 2),
          round(float(hi[1] - lo[1]), 2)]


def _flat(table: np.ndarray) -> list[float]:
  out = []
  for x, y, v in table:
    out += [round(float(x), 2), round(float(y), 2), int(v)]
  return out


def _annotation(inst: Instance, schema: skeletons.Schema, ann_id: int, image_id: int) -> dict:
  rows, cols = ndimage.find_objects(inst.mask.astype(np.int32))[0]
  # COCO polygons cannot hold holes, so the area is that of the filled silhouette the polygons
  # describe (the gaps between wheel spokes count as the wheelchair's).
  area = int(ndimage.binary_fill_holes(inst.mask[rows, cols]).sum())
  segmentation = [[round(float(c), 2) for c in outline.ravel()]
                  for outline in render.mask_outlines(inst.mask)]
  ann = {
      'id': ann_id, 'image_id': image_id, 'category_id': 1,
      # pycocotools' toBbox of the mask: first column and row, then widths in whole pixels.
      'bbox': [float(cols.start), float(rows.start), float(cols.stop - cols.start),
               float(rows.stop - rows.start)],
      'area': float(area), 'iscrowd': 0,
      'num_keypoints': int((inst.keypoints[:, 2] > 0).sum()),
      'segmentation': segmentation,
  }
  # A schema with COCO-WholeBody's parts is written in COCO-WholeBody's split-field format, so
  # the synthetic data exercises the reader path real WholeBody files take.
  # Only when every part is a WholeBody field: a schema with other parts too (goliath308's feet,
  # hands, extra) would lose their points in that format.
  split_parts = [p for p, _, _ in schema.parts if p != 'body']
  if not split_parts or any(p not in coco.WHOLEBODY_FIELDS for p in split_parts):
    ann['keypoints'] = _flat(inst.keypoints)
    return ann
  ann['keypoints'] = _flat(inst.keypoints[schema.part('body')])
  for part in split_parts:
    field = coco.WHOLEBODY_FIELDS[part]
    table = inst.keypoints[schema.part(part)]
    ann[field] = _flat(table)
    labelled = table[table[:, 2] > 0, :2]
    valid = len(labelled) > 0
    ann[f'{part}_valid'] = bool(valid)
    if part != 'foot':
      ann[f'{part}_box'] = _box(labelled) if valid else [0., 0., 0., 0.]
  return ann


def _check(out_dir, split: str, num: int, seed: int):
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; choose from {", ".join(SPLITS)}')
  if isinstance(num, bool) or not isinstance(num, int) or num < 1:
    raise ValueError(f'num must be a positive integer, got {num!r}')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f'output path {out_dir!r} exists and is not a directory')


def generate(out_dir: str | os.PathLike, population: str | Population, split: str, num: int,
             seed: int, shard: int = 0, *, style: str | Style = 'plain',
             progress: Callable[[int], None] | None = None) -> str:
  """Writes ``num`` synthetic person instances of ``population`` (a registered name or a record)
  drawn in ``style`` (a registered name or a record, :mod:`~vitpose_jax.synthetic.styles`) as a
  COCO dataset in ``out_dir`` and returns the annotation file's path; ValueError on a bad
  argument, an unknown population or style.

  The people, poses and layout of image k are the same draws in every style (see
  :mod:`~vitpose_jax.synthetic.styles` for when they are not); a style other than ``plain`` is
  named in the annotation file's ``info.style``.

  ``shard`` > 0 draws an independent stream of the same (seed, split, population): large
  datasets are generated as shards in parallel (:mod:`vitpose_jax.synthetic.cache`).
  ``progress``, if given, is called after each image with the number of instances written.

  Images ``images/000000000001.jpg`` … hold one or more people each (so there are at most ``num``
  images). JPEGs of an earlier run in ``out_dir/images`` are replaced; the annotation file is
  written last, atomically, so its presence marks a complete dataset.
  """
  population = populations.get(population)
  style = styles.get(style)
  _check(out_dir, split, num, seed)
  schema = skeletons.get(population.schema)
  image_dir = os.path.join(out_dir, IMAGE_DIR)
  os.makedirs(image_dir, exist_ok=True)
  ann_path = os.path.join(out_dir, ANNOTATION_FILE)
  if os.path.exists(ann_path):
    os.remove(ann_path)
  for name in sorted(os.listdir(image_dir)):
    if re.fullmatch(r'\d{12}\.jpg', name):
      os.remove(os.path.join(image_dir, name))
  images, annotations = [], []
  done = 0
  while done < num:
    image_id = len(images) + 1
    scene = render_scene(_rng(seed, split, population, image_id, shard), population,
                         max_people=min(3, num - done), style=style)
    file_name = f'{image_id:012d}.jpg'
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format='JPEG', quality=style.jpeg_quality)
    with open(os.path.join(image_dir, file_name), 'wb') as f:
      f.write(buffer.getvalue())
    h, w = scene.image.shape[:2]
    images.append({'id': image_id, 'file_name': file_name, 'width': w, 'height': h})
    for inst in scene.instances:
      done += 1
      annotations.append(_annotation(inst, schema, done, image_id))
    if progress is not None:
      progress(done)
  dataset = {
      'info': {'description': f'vitpose_jax synthetic {population.name} ({split})',
               'generator_version': GENERATOR_VERSION, 'population': population.name,
               'split': split, 'seed': seed, 'schema': schema.name,
               # Plain data predates styles: its info stays as it was, byte for byte.
               **({'style': style.name} if style != styles.PLAIN else {}),
               **({'shard': shard} if shard else {})},
      'images': images,
      'annotations': annotations,
      'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                      'keypoints': list(schema.keypoints),
                      'skeleton': [[a + 1, b + 1] for a, b in schema.link_indices]}],
  }
  tmp = ann_path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(dataset, f, separators=(',', ':'))
  os.replace(tmp, ann_path)
  return ann_path


def write_preview(data_dir: str | os.PathLike, path: str | os.PathLike, *, grid: int = 4,
                  tile: int = 256):
  """A grid×grid PNG of the dataset's first images with keypoints and links drawn (filled dots
  visible, rings occluded)."""
  with open(os.path.join(data_dir, ANNOTATION_FILE)) as f:
    dataset = json.load(f)
  schema = skeletons.get(dataset['info']['schema'])
  by_image: dict[int, list[dict]] = {}
  for ann in dataset['annotations']:
    by_image.setdefault(ann['image_id'], []).append(ann)
  sheet = Image.new('RGB', (grid * tile, grid * tile), (24, 24, 24))
  small = schema.num_keypoints > 30
  for k, info in enumerate(dataset['images'][:grid * grid]):
    f = tile / max(info['width'], info['height'])
    size = (round(info['width'] * f), round(info['height'] * f))
    with Image.open(os.path.join(data_dir, IMAGE_DIR, info['file_name'])) as source:
      image = source.convert('RGB').resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for ann in by_image.get(info['id'], []):
      kps = coco.annotation_keypoints(ann, schema)
      # Pixel centres sit at integer coordinates; PIL draws at pixel corners, hence +0.5.
      xy = (kps[:, :2] + 0.5) * f
      for (a, b), color in zip(schema.link_indices, schema.link_colors):
        if kps[a, 2] > 0 and kps[b, 2] > 0:
          draw.line([tuple(xy[a]), tuple(xy[b])], fill=tuple(color), width=1 if small else 2)
      for p, v, color in zip(xy, kps[:, 2], schema.keypoint_colors):
        if v == 0:
          continue
        r = 1.2 if small else 2.5
        box = [p[0] - r, p[1] - r, p[0] + r, p[1] + r]
        draw.ellipse(box, fill=tuple(color) if v == 2 else None, outline=tuple(color))
    sheet.paste(image, ((k % grid) * tile + (tile - size[0]) // 2,
                        (k // grid) * tile + (tile - size[1]) // 2))
  sheet.save(path)
