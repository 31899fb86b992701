"""Person detections → a COCO-format annotation file: the ``detections`` data source's files.

A detections file is a JSON list of ``{"file_name": PATH, "bbox": [x, y, w, h], "score": S}``
(``file_name`` relative to the image folder, the box in pixels of the upright image; a
``category_id`` and other fields are ignored). :func:`coco_file` turns the detections scoring at
least ``min_score`` into a COCO file of person boxes without keypoints, which is then read like
any other with ``labels=False`` (:func:`vitpose_jax.data.coco.read_coco`): unlabelled target-domain
data for domain adaptation.

The file is written once into ``$VITPOSE_JAX_CACHE/detections/`` under a name hashed from the
detections file's identity (path, size, mtime), the image folder and ``min_score``, atomically
(renamed into place), so a changed file or threshold gives a new one and a reader never sees half.
"""

from __future__ import annotations

import math
import os
from typing import Any

from vitpose_jax.data import packing
from vitpose_jax.data.coco import DataError, read_json
from vitpose_jax.data.images import ImageError, image_size

PERSON = 1  # the category id of the written file


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entries(path: str) -> list[dict[str, Any]]:
  """The detections of ``path``, each checked; DataError names the file, the entry and the
  field."""
  data = read_json(path, 'detections file')
  if not isinstance(data, list):
    raise DataError(f'{path}: detections must be a JSON list, not {type(data).__name__}')
  for i, entry in enumerate(data):
    if not isinstance(entry, dict):
      raise DataError(f'{path}: entry {i} is not an object ({entry!r:.60})')
    name, bbox, score = entry.get('file_name'), entry.get('bbox'), entry.get('score')
    if not isinstance(name, str) or not name:
      raise DataError(f'{path}: entry {i}: file_name {name!r:.60} is not a path')
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_number, bbox))):
      raise DataError(f'{path}: entry {i}: bbox {bbox!r:.60} is not [x, y, w, h] of finite '
                      'numbers')
    if not _number(score):
      raise DataError(f'{path}: entry {i}: score {score!r:.60} is not a finite number')
  return data


def _convert(path: str, images: str, min_score: float) -> dict[str, Any]:
  image_entries: dict[str, dict[str, Any]] = {}
  annotations = []
  for i, entry in enumerate(_entries(path)):
    if entry['score'] < min_score:
      continue
    name = entry['file_name']
    if name not in image_entries:
      try:
        width, height = image_size(os.path.join(images, name))
      except ImageError as e:
        raise DataError(f'{path}: entry {i}: file_name {name!r}: {e.problem}') from None
      image_entries[name] = {'id': len(image_entries), 'file_name': name, 'width': width,
                             'height': height}
    x, y, w, h = (float(v) for v in entry['bbox'])
    # The entry's index is its id, so messages about an annotation name the detection.
    annotations.append({'id': i, 'image_id': image_entries[name]['id'], 'category_id': PERSON,
                        'iscrowd': 0, 'bbox': [x, y, w, h], 'area': w * h,
                        'score': float(entry['score'])})
  return {'images': list(image_entries.values()), 'annotations': annotations,
          'categories': [{'id': PERSON, 'name': 'person'}]}


def coco_file(detections: str, images: str, *, min_score: float = 0.0,
              cache_dir: str | None = None) -> str:
  """The path of the COCO-format annotation file of ``detections`` (module docstring): one image
  per ``file_name`` with a kept detection, its width and height read from the image's header; one
  person annotation (``bbox``, ``score``, no keypoints) per detection with ``score >= min_score``,
  its id the entry's index in the list. Made on first use, then found in the cache.

  DataError (one line naming the file, the entry index and the field) for a file that is not a
  JSON list of detections, an entry without a path ``file_name``, a 4-number ``bbox`` or a finite
  ``score``, or an image that cannot be opened.
  """
  out = packing.derived_cache_file(detections, 'detections file', 'detections', cache_dir,
                                   images=os.path.abspath(images), min_score=float(min_score))
  if os.path.isfile(out):
    return out
  packing.write_cache_json(out, _convert(detections, images, min_score))
  return out
