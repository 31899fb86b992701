"""COCO-format person-keypoint files → one record per person instance.

Reads COCO (``keypoints``), COCO-WholeBody (``keypoints`` + ``foot_kpts``, ``face_kpts``,
``lefthand_kpts``, ``righthand_kpts``, assembled in schema order) and any user schema. When the
file's category lists keypoint names, labels are placed by name into the schema (so COCO-17 labels
train ``wheelchair23`` with its chair points unlabelled); otherwise the count must match.

Coordinates: pixels, x right, y down, integer values at pixel centres (COCO's convention).
Bad input is either an error naming the file and the annotation id (``strict=True``) or a
counted skip, reported once per dataset (default). A file that is not COCO format is always an
error: there is nothing to skip to.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitpose_jax.data.images import ImageError, read_image
from vitpose_jax.skeletons import Skeleton

# COCO-WholeBody stores parts in separate fields; the schema's part slices say where each lands.
WHOLEBODY_FIELDS = {'body': 'keypoints', 'foot': 'foot_kpts', 'face': 'face_kpts',
                    'lefthand': 'lefthand_kpts', 'righthand': 'righthand_kpts'}
BOX_PADDING = 1.25


class DataError(ValueError):
  """Bad input data; the message names the file and, where there is one, the annotation id."""


@dataclasses.dataclass
class SkipReport:
  """Counts of skipped annotations by reason, with the first example of each."""

  source: str
  kept: int = 0
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, str] = dataclasses.field(default_factory=dict)

  def add(self, reason: str, detail: str):
    self.counts[reason] += 1
    self.examples.setdefault(reason, detail)

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def summary(self) -> str:
    if not self.counts:
      return f'{self.source}: {self.kept} instances, none skipped'
    parts = ', '.join(f'{n} {reason} (e.g. {self.examples[reason]})'
                      for reason, n in sorted(self.counts.items()))
    return f'{self.source}: {self.kept} instances kept, {self.skipped} skipped: {parts}'


def box_to_center_scale(
    bbox: Sequence[float], aspect_ratio: float = 0.75, padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
  """[x, y, w, h] → centre (x, y) and scale (w, h) in pixels: the box grown to the model's aspect
  (w / h, 192 / 256 = 0.75 by default) and padded (official ``_xywh2cs`` without its /200)."""
  x, y, w, h = (float(v) for v in bbox)
  center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  else:
    w = h * aspect_ratio
  return center, np.array([w * padding, h * padding], np.float32)


def _load_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise DataError(f'{path}: annotation file not found') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(data, dict):
    raise DataError(f'{path}: not COCO format (top level is {type(data).__name__}, not an object)')
  missing = [k for k in ('images', 'annotations') if not isinstance(data.get(k), list)]
  if missing:
    raise DataError(f'{path}: not COCO format (no {" or ".join(repr(k) for k in missing)} list)')
  return data


def _category_names(data: dict[str, Any], path: str) -> dict[int, list[str] | None]:
  names = {}
  for cat in data.get('categories') or []:
    if not isinstance(cat, dict) or 'id' not in cat:
      raise DataError(f'{path}: not COCO format (a category without an id: {cat!r:.80})')
    kps = cat.get('keypoints')
    names[cat['id']] = list(kps) if kps else None
  return names


def annotation_keypoints(ann: dict[str, Any], skeleton: Skeleton,
                         names: list[str] | None = None) -> np.ndarray:
  """An annotation's labels as (K, 3) [x, y, v] in schema order; ValueError says what is wrong.

  ``names``: the keypoint names of the annotation's category, when the file lists them.
  """
  k = skeleton.num_keypoints
  split = [f for f in WHOLEBODY_FIELDS.values() if f != 'keypoints' and f in ann]
  if split:
    out = np.zeros((k, 3), np.float32)
    for part, start, stop in skeleton.parts:
      field = WHOLEBODY_FIELDS.get(part)
      if field is None or field not in ann:
        continue
      values = np.asarray(ann[field], np.float32).reshape(-1)
      if values.size != 3 * (stop - start):
        raise ValueError(f'{field} holds {values.size} values, expected {3 * (stop - start)} for '
                         f'part {part!r} of {skeleton.name}')
      out[start:stop] = values.reshape(-1, 3)
    return out
  values = np.asarray(ann.get('keypoints', []), np.float32).reshape(-1)
  if names is not None and names != list(skeleton.keypoints):
    if values.size != 3 * len(names):
      raise ValueError(f'keypoints hold {values.size} values, expected {3 * len(names)} for the '
                       f"category's {len(names)} keypoint names")
    index = {n: i for i, n in enumerate(skeleton.keypoints)}
    shared = [(i, index[n]) for i, n in enumerate(names) if n in index]
    if not shared:
      raise ValueError(f'none of the category keypoint names {names[:4]}... is in schema '
                       f'{skeleton.name}')
    out = np.zeros((k, 3), np.float32)
    src = values.reshape(-1, 3)
    for i, j in shared:
      out[j] = src[i]
    return out
  if values.size != 3 * k:
    raise ValueError(f'keypoints hold {values.size} values, expected {3 * k} for schema '
                     f'{skeleton.name} ({k} keypoints)')
  return values.reshape(k, 3)


def _check_image(path: str, size: tuple[Any, Any]) -> tuple[int, int]:
  """(width, height) of the image as training and evaluation will read it (decoded in full, so a
  truncated file fails here rather than in a worker mid-training), in the orientation whose size
  is ``size``, the ``images`` entry's (width, height); ValueError says what is wrong."""
  try:
    return read_image(path, size).size
  except ImageError as e:
    raise ValueError(e.problem) from None


class _Skip(Exception):

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason, self.detail = reason, detail


def _record(ann, image_info, image_sizes, images, skeleton, category_names, aspect_ratio,
            check_images) -> dict[str, Any]:
  """The record of one annotation, or _Skip saying why there is none."""
  if not isinstance(ann, dict) or 'image_id' not in ann or 'id' not in ann:
    raise _Skip('malformed', f'not an object with id and image_id: {ann!r:.60}')
  if ann.get('iscrowd', 0):
    raise _Skip('crowd', 'iscrowd=1 (crowd regions hold no single person)')
  info = image_info.get(ann['image_id'])
  if info is None:
    raise _Skip('unknown image', f'image_id {ann["image_id"]} is not in "images"')
  image_path = os.path.join(images, info['file_name'])
  if info['id'] not in image_sizes:
    if check_images:
      try:
        image_sizes[info['id']] = _check_image(image_path, (info.get('width'), info.get('height')))
      except ValueError as e:
        image_sizes[info['id']] = f'{image_path}: {e}'
    else:
      image_sizes[info['id']] = (int(info['width']), int(info['height']))
  size = image_sizes[info['id']]
  if isinstance(size, str):
    raise _Skip('bad image', size)
  width, height = size
  try:
    keypoints = annotation_keypoints(ann, skeleton, category_names.get(ann.get('category_id')))
  except ValueError as e:
    raise _Skip('wrong keypoint count', str(e)) from None
  bbox = np.asarray(ann.get('bbox', []), np.float64).reshape(-1)
  if bbox.size != 4:
    raise _Skip('bad bbox', f'bbox {ann.get("bbox")!r} is not [x, y, w, h]')
  if not (np.isfinite(keypoints).all() and np.isfinite(bbox).all()):
    raise _Skip('non-finite values', 'NaN or infinite keypoint or bbox values')
  if not (keypoints[:, 2] > 0).any():
    raise _Skip('no labelled keypoints', 'no keypoint has v > 0')
  # Official loader: clip the box to the image and keep it only if something is left.
  x, y, w, h = bbox
  x1, y1 = max(0.0, x), max(0.0, y)
  x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
  if w <= 0 or h <= 0 or x2 < x1 or y2 < y1 or x >= width or y >= height:
    raise _Skip('bad bbox', f'bbox {[round(float(v), 2) for v in bbox]} has zero area or lies '
                f'outside the {width}x{height} image')
  clipped = np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
  center, scale = box_to_center_scale(clipped, aspect_ratio)
  return {
      'image_path': image_path,
      'image_id': int(info['id']),
      'instance_id': int(ann['id']),
      'bbox': clipped,
      'center': center,
      'scale': scale,
      'keypoints': keypoints.astype(np.float32),
      'image_size': np.array([width, height], np.int32),
  }


def read_coco(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    skeleton: Skeleton,
    *,
    strict: bool = False,
    aspect_ratio: float = 0.75,
    check_images: bool = True,
) -> tuple[list[dict[str, Any]], SkipReport]:
  """One record per usable person instance, and the report of what was skipped.

  Record: ``image_path`` (str), ``image_id``, ``instance_id`` (the annotation id), ``bbox``
  float32 (4,) [x, y, w, h] clipped to the image, ``center`` / ``scale`` float32 (2,) (x, y) and
  (w, h) in pixels (padding 1.25 at ``aspect_ratio`` = w / h), ``keypoints`` float32 (K, 3)
  [x, y, v] in schema order, ``image_size`` int32 (2,) (width, height).

  Skipped (or, with ``strict``, an error naming file and annotation id): crowd annotations, an
  unknown image id, a missing, corrupt or over-limit image or one whose size is the ``images``
  entry's width and height in neither its stored nor its EXIF orientation (see
  :mod:`vitpose_jax.data.images`), keypoints of the wrong length, NaN or infinite values, a box
  with zero area or outside the image, no labelled keypoint.
  """
  annotations, images = os.fspath(annotations), os.fspath(images)
  data = _load_json(annotations)
  category_names = _category_names(data, annotations)
  image_info = {}
  for img in data['images']:
    if not isinstance(img, dict) or 'id' not in img or 'file_name' not in img:
      raise DataError(f'{annotations}: not COCO format (an image entry without id/file_name: '
                      f'{img!r:.80})')
    image_info[img['id']] = img
  report = SkipReport(source=annotations)
  image_sizes: dict[Any, tuple[int, int] | str] = {}
  records = []
  for ann in data['annotations']:
    try:
      records.append(_record(ann, image_info, image_sizes, images, skeleton, category_names,
                             aspect_ratio, check_images))
    except _Skip as skip:
      ann_id = ann.get('id') if isinstance(ann, dict) else None
      if strict:
        raise DataError(f'{annotations}: annotation {ann_id}: {skip.detail}') from None
      report.add(skip.reason, f'annotation {ann_id}: {skip.detail}')
  report.kept = len(records)
  if not records:
    raise DataError(f'{annotations}: no usable person instance for schema {skeleton.name}'
                    + (f' ({report.summary()})' if report.skipped else ''))
  return records, report
