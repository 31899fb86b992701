"""The source registry: a data spec ``dict(source=KIND, **fields)`` → COCO-format files.

Training, evaluation and the tools read data only as COCO-format files (an annotation JSON and the
folder its ``file_name`` entries are relative to); a source kind says where a spec's files are,
making them first if it must. Built in:

- ``coco``: ``dict(source='coco', annotations=PATH, images=DIR)``, files already on disk.
- ``synthetic``: ``dict(source='synthetic', population=NAME, num=N, seed=0)``, generated into the
  cache by :mod:`vitpose_jax.synthetic` (imported on first use of the kind).

:func:`register` adds a kind.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
  """

  name: str
  required: tuple[str, ...]
  optional: tuple[str, ...]
  files: Callable[[Mapping[str, Any], str, str | None], Files]
  prepare: Callable[[Sequence[tuple[Mapping[str, Any], str]], str | None], None] | None = None


def _coco_files(spec: Mapping[str, Any], split: str, cache_dir: str | None) -> Files:
  del split, cache_dir  # the files are the spec's
  return spec['annotations'], spec['images']


_KINDS: dict[str, SourceKind] = {
    'coco': SourceKind('coco', required=('annotations', 'images'), optional=(),
                       files=_coco_files),
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


def _checked(spec: Mapping[str, Any]) -> tuple[SourceKind, dict[str, Any]]:
  fields = dict(spec)
  source = kind(fields.pop('source', None))
  missing = [f for f in source.required if f not in fields]
  unknown = sorted(set(fields) - {*source.required, *source.optional})
  if missing or unknown:
    optional = f' (and optionally {" and ".join(source.optional)})' if source.optional else ''
    raise DataError(f'{source.name} data spec needs {" and ".join(source.required)}{optional}; '
                    f'got {sorted(fields)}')
  return source, fields


def files(spec: Mapping[str, Any], split: str, *, cache_dir: str | None = None) -> Files:
  """(annotations JSON, image folder) of a data spec, for its ``split`` ('train' or 'val')."""
  source, fields = _checked(spec)
  return source.files(fields, split, cache_dir)


def prepare(specs: Sequence[tuple[Mapping[str, Any], str]], *, cache_dir: str | None = None):
  """Makes the files of many (spec, split) pairs ready at once, by kind (a kind that generates
  its data does so in parallel), so that :func:`files` then finds them."""
  by_kind: dict[str, list[tuple[dict[str, Any], str]]] = {}
  for spec, split in specs:
    source, fields = _checked(spec)
    by_kind.setdefault(source.name, []).append((fields, split))
  for name, pairs in by_kind.items():
    if _KINDS[name].prepare is not None:
      _KINDS[name].prepare(pairs, cache_dir)
