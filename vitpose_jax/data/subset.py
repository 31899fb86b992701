"""A part of a COCO file's images: the ``subset`` field of any data spec.

``subset=(start, stop)`` (fractions, 0 ≤ start < stop ≤ 1) keeps the images whose rank lies in
``[round(start·n), round(stop·n))``, where n is the number of images in the file and the ranks
are a fixed pseudo-random order of the file's ``images`` list (a permutation drawn with seed 0,
so neither file order nor ids bias the part), with every annotation of a kept image. Parts of one
file with adjacent ranges are disjoint and together cover it, e.g. 10% of the target's labels:
``subset=(0, 0.1)`` with labels, ``subset=(0.1, 1), labels=False`` for the rest of its images.

The part is written once as a COCO file into ``$VITPOSE_JAX_CACHE/subsets/``, named by a hash of
the source file's identity (path, size, mtime) and the range, and then packed like any other.
Annotation and image ids are the source file's, and errors met reading the part name the source
file and the range (:func:`vitpose_jax.data.pipeline.open_source`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitpose_jax.data import packing
from vitpose_jax.data.coco import DataError, load_coco_json, image_indices


def check_range(value: Any, what: str = 'data spec') -> tuple[float, float]:
  """``(start, stop)`` of a ``subset`` value; DataError naming it unless it is two finite
  numbers with 0 ≤ start < stop ≤ 1."""
  ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value))
  if ok:
    start, stop = float(value[0]), float(value[1])
    ok = 0.0 <= start < stop <= 1.0
  if not ok:
    raise DataError(f'{what}: subset {value!r:.60} is not (start, stop) fractions with '
                    '0 <= start < stop <= 1')
  return start, stop


def image_ranks(num_images: int) -> np.ndarray:
  """(num_images,) int: each image's rank (position in the file's ``images`` list → rank)."""
  ranks = np.empty(num_images, np.int64)
  ranks[np.random.default_rng(0).permutation(num_images)] = np.arange(num_images)
  return ranks


def subset_file(annotations: str, subset: Sequence[float], *,
                cache_dir: str | None = None) -> str:
  """The path of the COCO file holding part ``subset`` of ``annotations``' images (module
  docstring), made on first use and then found in the cache. Its other top-level fields
  (``categories``, ``info``) are kept. DataError for a bad range, a range that keeps no image,
  or a file that is not COCO."""
  start, stop = check_range(subset, annotations)
  out = packing.derived_cache_file(annotations, 'annotation file', 'subsets', cache_dir,
                                   subset=[start, stop])
  if os.path.isfile(out):
    return out
  data = load_coco_json(annotations)
  images = data['images']
  image_indices(images, annotations)  # every image has a usable id, or the error names it
  ranks = image_ranks(len(images))
  first, last = round(start * len(images)), round(stop * len(images))
  dropped = {image['id'] for image, rank in zip(images, ranks) if not first <= rank < last}
  if first == last:
    raise DataError(f'{annotations}: subset ({start:g}, {stop:g}) keeps none of its '
                    f'{len(images)} images: widen the range')
  data['images'] = [image for image, rank in zip(images, ranks) if first <= rank < last]
  # Only the dropped images' annotations go: a malformed one stays, for the reader to count.
  data['annotations'] = [a for a in data['annotations'] if not _of(a, dropped)]
  packing.write_cache_json(out, data)
  return out


def _of(annotation: Any, image_ids: set) -> bool:
  image_id = annotation.get('image_id') if isinstance(annotation, dict) else None
  return isinstance(image_id, (int, float, str)) and image_id in image_ids
