"""The source registry: a data spec ``dict(source=KIND, **fields)`` → COCO-format files.

Training, evaluation and the tools read data only as COCO-format files (an annotation JSON and the
folder its ``file_name`` entries are relative to); a source kind says where a spec's files are,
making them first if it must. Built in:

- ``coco``: ``dict(source='coco', annotations=PATH, images=DIR)``, files already on disk.
- ``synthetic``: ``dict(source='synthetic', population=NAME, num=N, seed=0, style='plain')``,
  generated into the cache by :mod:`vitpose_jax.synthetic` (imported on first use of the kind);
  ``style`` names a rendering style (``plain``, ``shifted``: :mod:`vitpose_jax.synthetic.styles`).
- ``detections``: ``dict(source='detections', detections=PATH, images=DIR, min_score=0.0)``,
  person boxes without keypoints, turned into a COCO file in the cache by
  :mod:`vitpose_jax.data.detections`; always unlabelled.

Fields of every kind:

- ``labels=False`` (default True): its keypoints are not read, every usable person box is an
  instance with zero keypoint weights (unlabelled data for domain adaptation; see
  :func:`has_labels`).
- ``subset=(start, stop)``: a part of its images (fractions of them, in a fixed pseudo-random
  order; :mod:`vitpose_jax.data.subset`), e.g. ``(0, 0.1)`` for 10% of a target's labels and
  ``(0.1, 1)`` with ``labels=False`` for its other images.

:func:`register` adds a kind.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vitpose_jax.data import detections, subset
from vitpose_jax.data.coco import DataError

Files = tuple[str, str]  # (annotations JSON, image folder)


@dataclasses.dataclass(frozen=True)
class SourceKind:
  """One kind of data source.

  Attributes:
    name: the spec's ``source`` value.
    required, optional: the spec's other fields.
    files: (spec, split, cache_dir) → (annotations, images); ``split`` is 'train' or 'val', the
      role the data plays, for kinds that draw the two differently. DataError on a bad spec.
    prepare: optional (specs as (spec, split) pairs, cache_dir) → None: makes many specs' files
      at once (in parallel), before ``files`` is asked for each.
    labels: whether the kind's files can hold keypoint labels; a kind without (person boxes
      only) means ``labels=False`` and refuses a spec saying ``labels=True``.
  """

  name: str
  required: tuple[str, ...]
  optional: tuple[str, ...]
  files: Callable[[Mapping[str, Any], str, str | None], Files]
  prepare: Callable[[Sequence[tuple[Mapping[str, Any], str]], str | None], None] | None = None
  labels: bool = True


def _coco_files(spec: Mapping[str, Any], split: str, cache_dir: str | None) -> Files:
  del split, cache_dir  # the files are the spec's
  return spec['annotations'], spec['images']


def _detections_files(spec: Mapping[str, Any], split: str, cache_dir: str | None) -> Files:
  del split  # detections are what they are, whatever role they play
  min_score = spec.get('min_score', 0.0)
  if isinstance(min_score, bool) or not isinstance(min_score, (int, float)):
    raise DataError(f'detections data spec: min_score {min_score!r} is not a number')
  return detections.coco_file(spec['detections'], spec['images'], min_score=min_score,
                              cache_dir=cache_dir), spec['images']


_KINDS: dict[str, SourceKind] = {
    'coco': SourceKind('coco', required=('annotations', 'images'), optional=(),
                       files=_coco_files),
    'detections': SourceKind('detections', required=('detections', 'images'),
                             optional=('min_score',), files=_detections_files, labels=False),
}
# Kinds whose module registers them when imported, so their weight is paid only where used.
_LAZY = {'synthetic': 'vitpose_jax.synthetic.cache'}


def register(kind: SourceKind) -> SourceKind:
  """Adds ``kind`` to the registry; ValueError if its name is taken."""
  if kind.name in _KINDS:
    raise ValueError(f'data source {kind.name!r} is already registered')
  _KINDS[kind.name] = kind
  return kind


def kind(name: Any) -> SourceKind:
  """The registered kind ``name``; DataError naming the known ones if there is none."""
  if name not in _KINDS and name in _LAZY:
    importlib.import_module(_LAZY[name])
  if name not in _KINDS:
    known = sorted({*_KINDS, *_LAZY})
    raise DataError(f'data spec source {name!r} is not one of {", ".join(map(repr, known))}')
  return _KINDS[name]


# Fields every kind takes, applied here to whatever files the kind gives.
COMMON_FIELDS = ('labels', 'subset')


def _checked(spec: Mapping[str, Any]) -> tuple[SourceKind, dict[str, Any], bool]:
  """(the spec's kind, its kind's fields, whether it has labels); DataError on a bad spec."""
  fields = dict(spec)
  source = kind(fields.pop('source', None))
  labels = fields.pop('labels', source.labels)
  if 'subset' in fields:
    subset.check_range(fields.pop('subset'), f'{source.name} data spec')
  if not isinstance(labels, bool):
    raise DataError(f'{source.name} data spec: labels {labels!r} is not true or false')
  if labels and not source.labels:
    raise DataError(f'{source.name} data spec: labels=True, but {source.name} data holds no '
                    'keypoint labels')
  missing = [f for f in source.required if f not in fields]
  unknown = sorted(set(fields) - {*source.required, *source.optional})
  if missing or unknown:
    optional = f' (and optionally {", ".join((*source.optional, *COMMON_FIELDS))})'
    problems = ', '.join(f'{what}: {names}' for what, names in
                         (('missing', missing), ('unknown', unknown)) if names)
    raise DataError(f'{source.name} data spec needs {" and ".join(source.required)}{optional}; '
                    f'got {sorted(fields)} ({problems})')
  return source, fields, labels


def files(spec: Mapping[str, Any], split: str, *, cache_dir: str | None = None) -> Files:
  """(annotations JSON, image folder) of a data spec, for its ``split`` ('train' or 'val'); with
  ``subset``, the annotations are that part's file."""
  source, fields, _ = _checked(spec)
  annotations, images = source.files(fields, split, cache_dir)
  if 'subset' in spec:
    annotations = subset.subset_file(annotations, spec['subset'], cache_dir=cache_dir)
  return annotations, images


def has_labels(spec: Mapping[str, Any]) -> bool:
  """Whether a data spec's instances carry keypoint labels: its ``labels`` (default True), False
  for a kind of person boxes only (``detections``). DataError on a bad spec."""
  return _checked(spec)[2]


def prepare(specs: Sequence[tuple[Mapping[str, Any], str]], *, cache_dir: str | None = None):
  """Makes the files of many (spec, split) pairs ready at once, by kind (a kind that generates
  its data does so in parallel), so that :func:`files` then finds them."""
  by_kind: dict[str, list[tuple[dict[str, Any], str]]] = {}
  for spec, split in specs:
    source, fields, _ = _checked(spec)
    by_kind.setdefault(source.name, []).append((fields, split))
  for name, pairs in by_kind.items():
    if _KINDS[name].prepare is not None:
      _KINDS[name].prepare(pairs, cache_dir)
