"""COCO-format person-keypoint files → one record per person instance.

Which annotations a schema reads is decided once per file, by :func:`keypoint_categories`: the
categories whose keypoints are the schema's (by their names, or by their annotations' point count
where a category lists no names). Annotations of other categories are skipped and counted, and
the chosen category ids go with every record, so results, ground-truth filtering and detections
use the same ones (a person category may be ``2`` or ``"1"``).

Keypoint layouts read (:func:`annotation_keypoints`): COCO's flat ``keypoints``; COCO-WholeBody's
body in ``keypoints`` plus ``foot_kpts``, ``face_kpts``, ``lefthand_kpts`` and
``righthand_kpts``; mmpose's flat 133-point WholeBody layout; and a category listing more names
than its annotations carry (HumanArt). Labels are placed by name into the schema
(:func:`vitpose_jax.skeletons.match_keypoint_names`: case, separators and side spellings do not
matter), so COCO-17 labels train ``wheelchair23`` with its chair points unlabelled and a
COCO-WholeBody file read with ``coco17`` gives its bodies; a labelled point whose name the schema
lacks is counted and reported, never dropped silently.

Coordinates: pixels, x right, y down, integer values at pixel centres (COCO's convention).
Bad input is either an error naming the file and the annotation id (``strict=True``) or a
counted skip, reported once per dataset (default). A file that is not COCO format, or that has no
category with the schema's keypoints, is always an error: there is nothing to skip to; so is an
image or annotation id that appears twice.

Ids: image and annotation ids may be any JSON scalar (int, including 0 and negative values, or
str such as ``"frame_0001"``). Records carry them unchanged for results and messages, and carry
their positions in the file (``image_index``, ``annotation_index``) for everything that needs an
integer.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vitpose_jax import skeletons
from vitpose_jax.data.images import ImageError, read_image
from vitpose_jax.skeletons import Schema

# COCO-WholeBody stores parts in separate fields; the schema's part slices say where each lands.
WHOLEBODY_FIELDS = {'body': 'keypoints', 'foot': 'foot_kpts', 'face': 'face_kpts',
                    'lefthand': 'lefthand_kpts', 'righthand': 'righthand_kpts'}
BOX_PADDING = 1.25


class DataError(ValueError):
  """Bad input data; the message names the file and, where there is one, the annotation id."""


@dataclasses.dataclass
class SkipReport:
  """Counts of skipped annotations by reason, with the first example of each; and of labelled
  keypoints that kept instances carry under a name the schema lacks (``unplaced``: annotations
  per name, or per COCO-WholeBody part when a whole part has no place)."""

  source: str
  kept: int = 0
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, str] = dataclasses.field(default_factory=dict)
  unplaced: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  unplaced_examples: dict[str, str] = dataclasses.field(default_factory=dict)
  categories: KeypointCategories | None = None

  def add(self, reason: str, detail: str):
    self.counts[reason] += 1
    self.examples.setdefault(reason, detail)

  def add_unplaced(self, label: str, detail: str):
    self.unplaced[label] += 1
    self.unplaced_examples.setdefault(label, detail)

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def summary(self) -> str:
    if not self.counts:
      text = f'{self.source}: {self.kept} instances, none skipped'
    else:
      parts = ', '.join(f'{n} {reason} (e.g. {self.examples[reason]})'
                        for reason, n in sorted(self.counts.items()))
      text = f'{self.source}: {self.kept} instances kept, {self.skipped} skipped: {parts}'
    if self.unplaced:
      shown = self.unplaced.most_common(8)
      labels = ', '.join(f'{label} in {n} (e.g. {self.unplaced_examples[label]})'
                         for label, n in shown)
      more = len(self.unplaced) - len(shown)
      text += (f'; labelled keypoints the schema has no place for, dropped from kept instances: '
               f'{labels}' + (f' and {more} more names' if more > 0 else ''))
    return text


@dataclasses.dataclass(frozen=True)
class KeypointCategory:
  """One category whose annotations a schema reads.

  Attributes:
    id: the ``id`` exactly as the file writes it (``1``, ``2``, ``"1"``); results carry it.
    name: its ``name``, for messages.
    keypoint_names: its ``keypoints`` list, or None when it lists none (then an annotation's
      points are in the schema's order, or in COCO-WholeBody's when there are 133).
  """

  id: Any
  name: str
  keypoint_names: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class KeypointCategories:
  """The categories of one COCO file that hold a schema's keypoints (:func:`keypoint_categories`).

  Usually one (the person category); several when categories share a keypoint list (AP-10K's 54
  species), and results then carry each instance's own category as mmpose's do.
  """

  source: str
  categories: tuple[KeypointCategory, ...]

  def of(self, item: Mapping[str, Any]) -> KeypointCategory | None:
    """The keypoint category of an annotation, detection or result (by its ``category_id``), or
    None when it belongs to another category. An item without ``category_id`` belongs to the
    file's keypoint category when there is only one."""
    if 'category_id' not in item:
      return self.categories[0] if len(self.categories) == 1 else None
    cid = item['category_id']
    # 1 and "1" are different ids, as they are to pycocotools; True == 1 in Python, not in JSON.
    return next((c for c in self.categories
                 if type(c.id) is type(cid) and c.id == cid), None)

  def refusal(self, item: Mapping[str, Any]) -> str:
    """Why ``item`` is not of these categories, for messages (``of`` gave None)."""
    if 'category_id' not in item:
      return f'it has no category_id and the file has {self.describe()}'
    return f'category_id {item["category_id"]!r} is not {self.describe()}'

  def describe(self) -> str:
    """``category 2 ('person')``, or the first few of several."""
    named = [f'{c.id!r} ({c.name!r})' for c in self.categories[:3]]
    more = len(self.categories) - len(named)
    if len(self.categories) == 1:
      return f'category {named[0]}'
    return f'categories {", ".join(named)}' + (f' and {more} more' if more else '')


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


def read_json(path: str, what: str) -> Any:
  """The parsed JSON of ``path``; DataError naming the file when it is missing (``what`` says
  which file it is) or not valid JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f'{path}: {what} not found') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: not valid JSON ({e})') from None


def load_coco_json(path: str) -> dict[str, Any]:
  """The parsed COCO file ``path``; DataError naming it unless it is an object with ``images``
  and ``annotations`` lists."""
  data = read_json(path, 'annotation file')
  if not isinstance(data, dict):
    raise DataError(f'{path}: not COCO format (top level is {type(data).__name__}, not an object)')
  missing = [k for k in ('images', 'annotations') if not isinstance(data.get(k), list)]
  if missing:
    raise DataError(f'{path}: not COCO format (no {" or ".join(repr(k) for k in missing)} list)')
  return data


def _is_id(value: Any) -> bool:
  """Whether ``value`` can be an image or annotation id: a JSON scalar other than null."""
  return isinstance(value, (int, float, str))


def image_indices(images: Sequence[Any], path: str) -> dict[Any, int]:
  """Each image id of a COCO ``images`` list → the image's position in the list (0-based).

  DataError naming the file: an entry that is not an object with a JSON-scalar ``id``, or an id
  that appears twice (two files merged without renumbering: their annotations would be cropped
  from whichever image came last).
  """
  index: dict[Any, int] = {}
  for i, img in enumerate(images):
    if not isinstance(img, dict) or not _is_id(img.get('id')):
      raise DataError(f'{path}: not COCO format (images[{i}] has no int or str id: {img!r:.80})')
    first = index.setdefault(img['id'], i)
    if first != i:
      raise DataError(f'{path}: image id {img["id"]!r} appears twice (images[{first}] and '
                      f'images[{i}]); image ids must be unique')
  return index


def check_annotation_ids(annotations: Sequence[Any], path: str) -> None:
  """DataError naming the file and the id when two annotations share an id: results and
  evaluation pair predictions with annotations by id, so one of the two would be lost.
  Annotations without a usable id are left to the reader, which skips them."""
  first: dict[Any, int] = {}
  for i, ann in enumerate(annotations):
    if not isinstance(ann, dict) or not _is_id(ann.get('id')):
      continue
    j = first.setdefault(ann['id'], i)
    if j != i:
      raise DataError(f'{path}: annotation id {ann["id"]!r} appears twice (annotations[{j}] and '
                      f'annotations[{i}]); annotation ids must be unique')


@functools.cache
def _wholebody_parts() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
  """COCO-WholeBody's parts in its order: (part, its annotation field, the names of its points as
  the built-in ``coco_wholebody133`` has them: 17 body, 6 foot, 68 face, 21 per hand)."""
  wb = skeletons.get('coco_wholebody133')
  return tuple((part, WHOLEBODY_FIELDS[part], wb.keypoints[start:stop])
               for part, start, stop in wb.parts)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one annotation layout's points go: per field read, point positions in the field and
  their schema indices; per field, the positions whose names the schema lacks, with the label
  each is reported under."""

  reads: tuple[tuple[str, np.ndarray, np.ndarray], ...]
  unplaced: tuple[tuple[str, np.ndarray, tuple[str, ...]], ...]


# One field's points: (field, their names, the COCO-WholeBody part of each or None).
_Source = tuple[str, tuple[str, ...], tuple[str | None, ...]]


def _wholebody_source(field: str) -> _Source:
  parts = _wholebody_parts()
  return (field, tuple(n for _, _, names in parts for n in names),
          tuple(part for part, _, names in parts for _ in names))


def _flat_source(names: tuple[str, ...] | None, counts: dict[str, int],
                 schema: Schema) -> _Source:
  """The points of an annotation without COCO-WholeBody's split fields; ValueError says why its
  count fits nothing."""
  k, n = schema.num_keypoints, counts.get('keypoints', 0)
  wholebody = skeletons.get('coco_wholebody133')

  def plain(field, point_names):
    return field, tuple(point_names), (None,) * len(point_names)

  def leads(layout):
    # The category's names are the first of a longer layout: mmpose's flat WholeBody files keep
    # COCO-WholeBody's category, which lists only the 17 body names.
    return skeletons.match_keypoint_names(names, layout) == tuple(range(len(names)))

  if not names:
    if n == k:
      return plain('keypoints', schema.keypoints)
    if n == wholebody.num_keypoints:
      return _wholebody_source('keypoints')
    raise ValueError(f'keypoints hold {3 * n} values, expected {3 * k} for schema {schema.name} '
                     f'({k} keypoints)')
  if n == len(names):
    return plain('keypoints', names)
  matched = skeletons.match_keypoint_names(names, schema)
  full = f'keypoints_{len(names)}'
  if 0 < n < len(names) and (counts.get(full) == len(names)
                             or (n == k and None not in matched[:n])):
    # HumanArt: the category lists 21 names, 'keypoints' holds the first 17 (COCO's) and
    # 'keypoints_21' all 21. Fewer points than names are the first names when the file keeps
    # the full set in keypoints_<N>, or when they are as many as the schema has and it names
    # them all; otherwise a short list is a wrong count. keypoints_<N> is read only when the
    # schema wants a point beyond the first n, so a COCO-17 reading neither loses nor drops one.
    if counts.get(full) == len(names) and any(i is not None for i in matched[n:]):
      return plain(full, names)
    return plain('keypoints', names[:n])
  if n == k and leads(schema):
    return plain('keypoints', schema.keypoints)
  if n == wholebody.num_keypoints and leads(wholebody):
    return _wholebody_source('keypoints')
  raise ValueError(f'keypoints hold {3 * n} values, expected {3 * len(names)} for the '
                   f"category's {len(names)} keypoint names")


def _split_sources(names: tuple[str, ...] | None, counts: dict[str, int]) -> list[_Source]:
  """The points of a COCO-WholeBody annotation, field by field; ValueError on a wrong count."""
  parts = _wholebody_parts()
  total = sum(len(part_names) for _, _, part_names in parts)
  sources, offset = [], 0
  for i, (part, field, part_names) in enumerate(parts):
    if names and len(names) == total:  # the category lists all 133 (synthetic files do)
      part_names = names[offset:offset + len(part_names)]
    elif i == 0 and names and len(names) == counts.get(field):
      part_names = names
    offset += len(part_names)
    if field not in counts:
      continue
    if counts[field] != len(part_names):
      raise ValueError(f'{field} holds {3 * counts[field]} values, expected '
                       f"{3 * len(part_names)} for COCO-WholeBody's {part}")
    sources.append((field, part_names, (part,) * len(part_names)))
  return sources


@functools.lru_cache(maxsize=256)
def _layout(names: tuple[str, ...] | None, counts: tuple[tuple[str, int], ...],
            schema: Schema) -> _Layout | str:
  """The layout of annotations whose category lists ``names`` and whose keypoint fields hold
  ``counts`` points, or why it cannot be read for the schema (kept too, as a file repeats it)."""
  count = dict(counts)
  try:
    if any(field in count for _, field, _ in _wholebody_parts()[1:]):
      sources = _split_sources(names, count)
    else:
      sources = [_flat_source(names, count, schema)]
    everything = [n for _, point_names, _ in sources for n in point_names]
    index = iter(skeletons.match_keypoint_names(everything, schema))
  except ValueError as e:
    return str(e)
  reads, unplaced = [], []
  for field, point_names, parts in sources:
    dst = [next(index) for _ in point_names]
    src = [i for i, j in enumerate(dst) if j is not None]
    if src:
      reads.append((field, np.array(src), np.array([dst[i] for i in src])))
    placed_parts = {parts[i] for i in src}
    lost = [i for i, j in enumerate(dst) if j is None]
    if lost:
      # A COCO-WholeBody part with no place at all (the face, read with coco17) is one label.
      labels = tuple(f'WholeBody {parts[i]}' if parts[i] and parts[i] not in placed_parts
                     else repr(point_names[i]) for i in lost)
      unplaced.append((field, np.array(lost), labels))
  if not reads:
    return f'none of the keypoint names {everything[:4]}... is in schema {schema.name}'
  return _Layout(tuple(reads), tuple(unplaced))


def _keypoint_fields(ann: Mapping[str, Any],
                     names: tuple[str, ...] | None) -> dict[str, np.ndarray]:
  """Every keypoint field the annotation has as float32 (n, 3) [x, y, v]: ``keypoints``,
  COCO-WholeBody's split fields and HumanArt's ``keypoints_<N>`` (N the category's name count).
  ValueError for a field that is not numbers in threes."""
  fields = [field for _, field, _ in _wholebody_parts()]
  if names:
    fields.append(f'keypoints_{len(names)}')
  out = {}
  for field in fields:
    if field not in ann and field != 'keypoints':
      continue
    try:
      values = np.asarray(ann.get(field, []), np.float32).reshape(-1)
    except (TypeError, ValueError):
      raise ValueError(f'{field} {ann[field]!r:.60} is not a list of numbers') from None
    if values.size % 3:
      raise ValueError(f'{field} holds {values.size} values, not [x, y, v] triples')
    out[field] = values.reshape(-1, 3)
  return out


def _layout_of(fields: dict[str, np.ndarray], names: tuple[str, ...] | None,
               schema: Schema) -> _Layout | str:
  return _layout(names, tuple((f, len(v)) for f, v in fields.items()), schema)


def _place(ann: Mapping[str, Any], schema: Schema,
           names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
  """(the annotation's (K, 3) labels in schema order, the labels of its points with v > 0 that
  the schema has no place for)."""
  names = tuple(names) if names else None
  fields = _keypoint_fields(ann, names)
  layout = _layout_of(fields, names, schema)
  if isinstance(layout, str):
    raise ValueError(layout)
  out = np.zeros((schema.num_keypoints, 3), np.float32)
  for field, src, dst in layout.reads:
    out[dst] = fields[field][src]
  lost = []
  for field, src, labels in layout.unplaced:
    visible = fields[field][src, 2] > 0
    lost += sorted({label for label, v in zip(labels, visible) if v})
  return out, lost


def annotation_keypoints(ann: Mapping[str, Any], schema: Schema,
                         names: Sequence[str] | None = None) -> np.ndarray:
  """An annotation's labels as float32 (K, 3) [x, y, v] in schema order, pixels; a schema point
  the annotation does not label is [0, 0, 0]. ValueError says what is wrong.

  ``names``: the keypoint names of the annotation's category, when the file lists them. Layouts:
    - COCO: ``keypoints`` holds one [x, y, v] per category name, placed by name; without names,
      K points in the schema's order (or 133 in COCO-WholeBody's).
    - COCO-WholeBody: the body in ``keypoints`` and ``foot_kpts`` (6), ``face_kpts`` (68),
      ``lefthand_kpts`` (21) and ``righthand_kpts`` (21), named as ``coco_wholebody133`` names
      them (or by the category, when it lists all 133). Any schema takes the points it names:
      ``coco17`` the body, ``coco_wholebody133`` all.
    - mmpose's flat WholeBody: all 133 in ``keypoints`` while the category lists the 17 body
      names; read as COCO-WholeBody's order (or the schema's own, when it has 133 points).
    - HumanArt: the category lists 21 names, ``keypoints`` holds 17 and ``keypoints_21`` 21. An
      annotation holding fewer points than its category names holds the first ones, so its count
      decides: the 17 are COCO-17's and read as such; ``keypoints_21`` is read only for a schema
      that has one of the other four points.
  Names match as :func:`vitpose_jax.skeletons.match_keypoint_names` says (``"Right Shoulder"``
  is ``right_shoulder``).
  """
  return _place(ann, schema, names)[0]


def _category_problem(cat: Mapping[str, Any], anns: list, schema: Schema) -> str:
  """Why a category holds none of the schema's keypoints, in a few words for the error."""
  label = f'category {cat["id"]!r} ({cat.get("name")!r})'
  names = cat.get('keypoints') or []
  if names:
    text = f'{label} lists {len(names)} keypoint names, none of them in the schema'
    if len(names) == schema.num_keypoints:
      text += (f' although the count matches; names not matched: '
               f'{", ".join(map(repr, names[:20]))}' + (' ...' if len(names) > 20 else ''))
    return text
  sizes = sorted({len(a.get('keypoints') or []) // 3 for a in anns})
  if not anns or sizes == [0]:
    return f'{label} lists no keypoint names and its annotations carry no keypoints'
  return (f'{label} lists no keypoint names and its annotations hold '
          f'{"/".join(map(str, sizes[:5]))} points')


def keypoint_categories(data: Mapping[str, Any], schema: Schema,
                        source: str) -> KeypointCategories:
  """The categories of a loaded COCO file whose annotations ``schema`` reads, found once.

  A category qualifies when one of its ``keypoints`` names is the schema's (as
  :func:`vitpose_jax.skeletons.match_keypoint_names` matches names), or, listing no names, when
  one of its annotations has a layout :func:`annotation_keypoints` reads for the schema (e.g. K
  points). A file without ``categories`` reads all its annotations, under the category ids they
  carry (1, COCO's person, where none does).

  Raises DataError naming ``source`` when no category qualifies (saying, per category, why; when
  a category lists as many names as the schema has keypoints, the names that do not match), when
  a category has no id or two share one, or when names are not a list of strings.
  """
  listed = data.get('categories')
  annotations = [a for a in data.get('annotations') or [] if isinstance(a, Mapping)]
  if not listed:
    ids = list(dict.fromkeys(a['category_id'] for a in annotations
                             if isinstance(a.get('category_id'), (str, int, float))))
    return KeypointCategories(source, tuple(
        KeypointCategory(i, str(i), None) for i in ids or [1]))
  if not isinstance(listed, list):
    raise DataError(f'{source}: "categories" is {type(listed).__name__}, not a list')
  by_category = collections.defaultdict(list)
  for ann in annotations:
    # Without a category_id, an annotation is the only category's (as KeypointCategories.of).
    if 'category_id' in ann or len(listed) == 1:
      cid = ann['category_id'] if 'category_id' in ann else listed[0].get('id')
      by_category[repr(cid)].append(ann)
  found, problems, seen = [], [], set()
  for cat in listed:
    if not isinstance(cat, Mapping) or 'id' not in cat:
      raise DataError(f'{source}: not COCO format (a category without an id: {cat!r:.80})')
    if repr(cat['id']) in seen:
      raise DataError(f'{source}: categories: two categories have id {cat["id"]!r}')
    seen.add(repr(cat['id']))
    names = cat.get('keypoints') or None
    if names is not None and not (isinstance(names, list)
                                  and all(isinstance(n, str) for n in names)):
      raise DataError(f'{source}: category {cat["id"]!r}: keypoints {names!r:.80} is not a list '
                      'of names')
    names = tuple(names) if names else None
    anns = by_category[repr(cat['id'])]
    try:
      matches = names is not None and any(
          i is not None for i in skeletons.match_keypoint_names(names, schema))
    except ValueError as e:
      raise DataError(f'{source}: category {cat["id"]!r}: {e}') from None
    if not matches:
      matches = any(_readable(a, names, schema) for a in anns)
    if matches:
      found.append(KeypointCategory(cat['id'], str(cat.get('name', cat['id'])), names))
    else:
      problems.append(_category_problem(cat, anns, schema))
  if not found:
    raise DataError(f'{source}: no category holds keypoints of schema {schema.name} '
                    f'({schema.num_keypoints} keypoints): {"; ".join(problems)}')
  return KeypointCategories(source, tuple(found))


def _readable(ann: Mapping[str, Any], names: tuple[str, ...] | None, schema: Schema) -> bool:
  try:
    return isinstance(_layout_of(_keypoint_fields(ann, names), names, schema), _Layout)
  except ValueError:
    return False


def _check_image(path: str, size: tuple[Any, Any]) -> tuple[int, int]:
  """(width, height) of the image as training and evaluation will read it (decoded in full, so a
  truncated file fails here rather than in a worker mid-training), in the orientation whose size
  is ``size``, the ``images`` entry's (width, height); ValueError says what is wrong."""
  try:
    return read_image(path, size).size
  except ImageError as e:
    raise ValueError(e.problem) from None


class _Skip(Exception):
  """Why an annotation gives no record; ``bad_input`` False for one that is fine but not ours
  (another category), which even ``strict`` reading only counts."""

  def __init__(self, reason: str, detail: str, bad_input: bool = True):
    super().__init__(detail)
    self.reason, self.detail, self.bad_input = reason, detail, bad_input


def _compressed_counts(counts: bytes) -> list[int]:
  """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5 bits a
  character from '0', a continuation bit, the runs after the second stored as differences).
  ValueError when the string ends inside a number; pycocotools itself does not check."""
  runs, p = [], 0
  while p < len(counts):
    x, k, more = 0, 0, True
    while more:
      if p >= len(counts):
        raise ValueError('compressed RLE counts end inside a run length')
      c = counts[p] - 48
      x |= (c & 0x1f) << 5 * k
      more = bool(c & 0x20)
      p, k = p + 1, k + 1
      if not more and c & 0x10:
        x |= -1 << 5 * k
    runs.append(x + runs[-2] if len(runs) > 2 else x)
  return runs


def _check_runs(runs: Sequence[int], height: int, width: int, form: str):
  if any(r < 0 for r in runs) or sum(runs) != height * width:
    raise ValueError(f'{form} run lengths cover {sum(runs)} pixels (or are negative), not the '
                     f'{width}x{height} image\'s {height * width}')


def segmentation_rle(segmentation: Any, height: int, width: int) -> bytes | None:
  """An annotation's ``segmentation`` as the compressed RLE ``counts`` (bytes) of its mask at
  (``height``, ``width``) pixels, or None when it has none (absent, ``[]``, or only polygons of
  fewer than three points, which cover nothing and which detectron2 drops too).

  Forms: polygons (a list of flat [x0, y0, x1, y1, ...] lists, merged into one mask),
  uncompressed RLE (``{"size": [h, w], "counts": [run, ...]}``) and compressed RLE (``counts`` a
  string). ValueError says what is malformed: a polygon that is not an even number of finite
  numbers, an RLE whose size is not [height, width] or whose runs do not cover it exactly.
  """
  from pycocotools import mask as mask_utils  # imported only where masks are read

  if segmentation is None or (isinstance(segmentation, list) and not segmentation):
    return None
  if isinstance(segmentation, list):
    polygons = []
    for polygon in segmentation:
      try:
        values = np.asarray(polygon, np.float64)
      except (TypeError, ValueError):
        values = None
      if values is None or values.ndim != 1 or values.size % 2 or not np.isfinite(values).all():
        raise ValueError(f'polygon {polygon!r:.60} is not a list of finite x, y pairs')
      if values.size >= 6:
        polygons.append(values.tolist())
    if not polygons:
      return None
    rles = mask_utils.frPyObjects(polygons, height, width)
    return (mask_utils.merge(rles) if len(rles) > 1 else rles[0])['counts']
  if not isinstance(segmentation, dict):
    raise ValueError(f'segmentation {segmentation!r:.60} is neither polygons nor RLE')
  size, counts = segmentation.get('size'), segmentation.get('counts')
  if not isinstance(size, list) or size != [height, width]:
    raise ValueError(f'RLE size {size!r:.40} is not the image\'s [height, width] '
                     f'[{height}, {width}]')
  if isinstance(counts, list):
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
      raise ValueError(f'RLE counts {counts!r:.60} are not whole numbers')
    _check_runs(counts, height, width, 'RLE')
    return mask_utils.frPyObjects(segmentation, height, width)['counts']
  if isinstance(counts, str):
    try:
      counts = counts.encode('ascii')
    except UnicodeEncodeError:
      raise ValueError(f'compressed RLE counts {counts!r:.40} are not ASCII') from None
  if not isinstance(counts, bytes):
    raise ValueError(f'RLE counts {counts!r:.60} are neither a list nor a string')
  if any(c < 48 or c > 111 for c in counts):
    raise ValueError(f'compressed RLE counts {counts!r:.40} hold characters outside COCO\'s')
  _check_runs(_compressed_counts(counts), height, width, 'compressed RLE')
  return counts


def decode_segmentation(segmentation: bytes, image_size: Sequence[int]) -> np.ndarray:
  """A record's ``segmentation`` (compressed RLE counts) → its mask, uint8 (H, W) of 0 and 1;
  ``image_size`` is the record's (width, height)."""
  from pycocotools import mask as mask_utils

  width, height = (int(v) for v in image_size)
  return mask_utils.decode({'size': [height, width], 'counts': segmentation})


def _record(ann, image_info, image_sizes, images, schema, categories, aspect_ratio,
            check_images, labels) -> tuple[dict[str, Any], list[str]]:
  """The record of one annotation and the labels of its points the schema has no place for, or
  _Skip saying why there is none. ``image_info``: image id → (position in the file, image
  entry). Without ``labels`` the keypoints are not read (all zero)."""
  if not isinstance(ann, dict) or not (_is_id(ann.get('image_id')) and _is_id(ann.get('id'))):
    raise _Skip('malformed', f'not an object with an int or str id and image_id: {ann!r:.60}')
  category = categories.of(ann)
  if category is None:
    raise _Skip('other category', f'{categories.refusal(ann)}, whose keypoints schema '
                f'{schema.name} reads', False)
  if ann.get('iscrowd', 0):
    raise _Skip('crowd', 'iscrowd=1 (crowd regions hold no single person)')
  if ann['image_id'] not in image_info:
    raise _Skip('unknown image', f'image_id {ann["image_id"]!r} is not in "images"')
  image_index, info = image_info[ann['image_id']]
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
  if labels:
    try:
      keypoints, unplaced = _place(ann, schema, category.keypoint_names)
    except ValueError as e:
      raise _Skip('wrong keypoint count', str(e)) from None
  else:
    keypoints, unplaced = np.zeros((schema.num_keypoints, 3), np.float32), []
  bbox = np.asarray(ann.get('bbox', []), np.float64).reshape(-1)
  if bbox.size != 4:
    raise _Skip('bad bbox', f'bbox {ann.get("bbox")!r} is not [x, y, w, h]')
  if not (np.isfinite(keypoints).all() and np.isfinite(bbox).all()):
    raise _Skip('non-finite values', 'NaN or infinite keypoint or bbox values')
  if labels and not (keypoints[:, 2] > 0).any():
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
  try:
    segmentation = segmentation_rle(ann.get('segmentation'), height, width)
  except ValueError as e:
    raise _Skip('bad segmentation', str(e)) from None
  record = {
      'image_path': image_path,
      'image_id': info['id'],
      'instance_id': ann['id'],
      'image_index': image_index,
      'category_id': category.id,
      'bbox': clipped,
      'center': center,
      'scale': scale,
      'keypoints': keypoints[:, :2].astype(np.float32),
      'keypoints_visible': keypoints[:, 2].astype(np.float32),
      'image_size': np.array([width, height], np.int32),
  }
  if segmentation is not None:
    record['segmentation'] = segmentation
  return record, unplaced


def _categories(data: Mapping[str, Any], schema: Schema, source: str,
                labels: bool) -> KeypointCategories:
  """keypoint_categories; without labels, where no category holds the schema's keypoints (a file
  of person boxes), the categories named 'person'."""
  try:
    return keypoint_categories(data, schema, source)
  except DataError as error:
    if labels:
      raise
    persons = [c for c in data.get('categories') or []
               if isinstance(c, Mapping) and 'id' in c
               and str(c.get('name', '')).casefold() == 'person']
    if not persons:
      raise DataError(f'{error}; and no category is named "person"') from None
    return KeypointCategories(source, tuple(KeypointCategory(c['id'], str(c['name']), None)
                                            for c in persons))


def read_coco(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    schema: Schema,
    *,
    strict: bool = False,
    aspect_ratio: float = 0.75,
    check_images: bool = True,
    labels: bool = True,
) -> tuple[list[dict[str, Any]], SkipReport]:
  """One record per usable person instance, and the report of what was skipped.

  Record: ``image_path`` (str), ``image_id`` and ``instance_id`` (the file's image and
  annotation ids as they are: int or str), ``image_index`` and ``annotation_index`` (int: their
  positions in the file's ``images`` and ``annotations``), ``category_id`` (as the file writes
  it: results carry it), ``bbox`` float32 (4,) [x, y, w, h] clipped to the image, ``center`` /
  ``scale`` float32 (2,) (x, y) and (w, h) in pixels (padding 1.25 at ``aspect_ratio`` = w / h),
  ``keypoints`` float32 (K, 2) [x, y] and ``keypoints_visible`` float32 (K,) (COCO's v: 2
  visible, 1 occluded, 0 unlabelled) in schema order (:func:`annotation_keypoints`' columns),
  ``image_size`` int32 (2,) (width, height); and, when the annotation has a ``segmentation``
  (polygons, uncompressed or compressed RLE), ``segmentation``: bytes, the compressed RLE
  ``counts`` of the instance's mask at the image's size (pycocotools' form; decode it with
  :func:`decode_segmentation`). An annotation without one gives a record without the key.

  ``labels=False`` (unlabelled data, e.g. a target domain's person boxes) reads no keypoints:
  every non-crowd annotation of the person category with a usable box is a record, its
  ``keypoints`` (K, 2) and ``keypoints_visible`` (K,) zero, so shapes are those of labelled
  records. The category is the schema's keypoint category or, where no category lists keypoints,
  the one named 'person'.

  Skipped (or, with ``strict``, an error naming file and annotation id): crowd annotations, an
  annotation without an int or str id or image_id, an unknown image id, a missing, corrupt or
  over-limit image or one whose size is the ``images`` entry's width and height in neither its
  stored nor its EXIF orientation (see :mod:`vitpose_jax.data.images`), keypoints of the wrong
  length, NaN or infinite values, a box with zero area or outside the image, no labelled keypoint
  (these two only with ``labels``), a malformed segmentation (:func:`segmentation_rle`).
  Annotations of other categories than the schema's (:func:`keypoint_categories`, kept in
  ``report.categories``) are counted as ``other category`` in both modes; labelled points the
  schema has no place for are counted per name in ``report.unplaced``. Always a DataError naming
  the file and the id: an image id or an annotation id that appears twice.
  """
  annotations, images = os.fspath(annotations), os.fspath(images)
  data = load_coco_json(annotations)
  categories = _categories(data, schema, annotations, labels)
  image_info = {}
  for image_id, i in image_indices(data['images'], annotations).items():
    if 'file_name' not in data['images'][i]:
      raise DataError(f'{annotations}: not COCO format (image {image_id!r} has no file_name)')
    image_info[image_id] = (i, data['images'][i])
  check_annotation_ids(data['annotations'], annotations)
  report = SkipReport(source=annotations, categories=categories)
  image_sizes: dict[Any, tuple[int, int] | str] = {}
  records = []
  for i, ann in enumerate(data['annotations']):
    ann_id = ann.get('id') if isinstance(ann, dict) else None
    try:
      record, unplaced = _record(ann, image_info, image_sizes, images, schema, categories,
                                 aspect_ratio, check_images, labels)
    except _Skip as skip:
      if strict and skip.bad_input:
        raise DataError(f'{annotations}: annotation {ann_id}: {skip.detail}') from None
      report.add(skip.reason, f'annotation {ann_id}: {skip.detail}')
      continue
    records.append({**record, 'annotation_index': i})
    for label in unplaced:
      report.add_unplaced(label, f'annotation {ann_id}')
  report.kept = len(records)
  if not records:
    raise DataError(f'{annotations}: no usable person instance for schema {schema.name}'
                    + (f' ({report.summary()})' if report.skipped else ''))
  return records, report
