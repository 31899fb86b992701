"""Packing person instances into TFDS array_record datasets, and finding them in the cache.

Real COCO-format data and the synthetic data take the same path: COCO JSON + images →
:func:`vitpose_jax.data.coco.read_coco` → a TFDS dataset (``file_format='array_record'``, no
TensorFlow) whose images are encoded as :func:`vitpose_jax.data.images.read_image` reads them
(8-bit RGB, upright) → ``tfds``'s random-access data source, images decoded to PIL
(:class:`DecodedSource`) → grain.

The cache lives under ``$VITPOSE_JAX_CACHE`` (default ``~/.cache/vitpose_jax``). A packed
dataset's directory name is a hash of everything that decides its contents (annotation file
identity, image folder, schema record, options, packing version), so a changed input is packed
anew rather than silently reused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from vitpose_jax.data.coco import DataError, SkipReport, read_coco
from vitpose_jax.data.images import decode_packed, packed_bytes
from vitpose_jax.skeletons import Schema

# Bump when the packed layout or the record semantics change: it enters every cache key.
# 2: records hold the image's and annotation's positions in the file, not their ids (ids may be
# strings, and positions are unique where a file's ids need not be).
# 3: images as vitpose_jax.data.images reads them (high bit depths scaled, EXIF orientation).
# 4: records carry the instance's mask (``segmentation``, compressed RLE; b'' packed for none), a
# malformed segmentation skips its annotation, and unlabelled packing (``labels=False``) exists.
PACK_VERSION = 4
_BUILDER_NAME = 'pose_instances'


def cache_root() -> str:
  return os.path.expanduser(os.environ.get('VITPOSE_JAX_CACHE', '~/.cache/vitpose_jax'))


def derived_cache_file(source: str, what: str, folder: str, cache_dir: str | None = None,
                       **options) -> str:
  """The cache path (``<cache>/<folder>/<stem>-<hash>.json``) of a JSON file derived from file
  ``source`` with ``options``: the hash covers the source's path, size and mtime and the options,
  so a changed source or option gives a new file. DataError naming ``source`` (``what`` it is)
  when it is missing."""
  source = os.path.abspath(source)
  try:
    stat = os.stat(source)
  except FileNotFoundError:
    raise DataError(f'{source}: {what} not found') from None
  identity = {'source': source, 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns, **options}
  key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
  stem = os.path.splitext(os.path.basename(source))[0]
  return os.path.join(cache_dir or cache_root(), folder, f'{stem}-{key}.json')


def write_cache_json(path: str, data: Any):
  """Writes ``data`` as JSON to the cache file ``path`` atomically (a reader never sees half a
  file); when another process wrote ``path`` first, theirs is kept, so a packing key made from
  the file's identity stays valid."""
  root = os.path.dirname(path)
  os.makedirs(root, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.writing-', suffix='.json', dir=root)
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(data, f)
    if os.path.isfile(path):
      os.remove(tmp)
    else:
      os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _features(num_keypoints: int):
  import tensorflow_datasets as tfds  # heavy: imported only when packing or reading

  tensor = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'image_index': np.int64,
      'annotation_index': np.int64,
      'bbox': tensor(shape=(4,), dtype=np.float32),
      'center': tensor(shape=(2,), dtype=np.float32),
      'scale': tensor(shape=(2,), dtype=np.float32),
      # COCO's [x, y, v] triplets, as the annotation file holds them: records split them into
      # keypoints and keypoints_visible (packed and read back in PoseInstances, DecodedSource).
      'keypoints': tensor(shape=(num_keypoints, 3), dtype=np.float32),
      'image_size': tensor(shape=(2,), dtype=np.int32),
      # The compressed RLE counts of the instance mask at the image's size, b'' where the
      # annotation has none (a feature is in every example; DecodedSource drops the empty one).
      'segmentation': tensor(shape=(), dtype=np.object_),
  })


@functools.cache
def _builder_class():
  import tensorflow_datasets as tfds

  # Not registered: every packed dataset is opened by its directory, never by name.
  class PoseInstances(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Person instances of one COCO-format dataset: image, box, centre/scale, keypoints."""

    name = _BUILDER_NAME
    VERSION = tfds.core.Version(f'{PACK_VERSION}.0.0')

    def __init__(self, *, splits: dict[str, list[dict[str, Any]]], num_keypoints: int,
                 description: str, data_dir: str):
      self._splits = splits
      self._num_keypoints = num_keypoints
      self._description = description
      super().__init__(data_dir=data_dir, file_format='array_record')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, description=self._description,
                                   features=_features(self._num_keypoints))

    def _split_generators(self, dl_manager):
      del dl_manager  # everything is local
      return {split: self._generate_examples(records) for split, records in self._splits.items()}

    # TFDS announces "Downloading and preparing dataset": nothing is downloaded here, and a user
    # on an offline cluster should not be told otherwise. Packing logs what it does itself.
    def _log_download_bytes(self):
      pass

    def _log_download_done(self):
      pass

    def _generate_examples(self, records):
      for r in records:
        example = {k: r[k] for k in ('image_index', 'annotation_index', 'bbox', 'center',
                                     'scale', 'image_size')}
        example['keypoints'] = np.concatenate(
            [r['keypoints'], r['keypoints_visible'][:, None]], axis=1)
        example['segmentation'] = r.get('segmentation', b'')
        # The record's image_size picks the orientation read_coco checked the labels against.
        example['image'] = packed_bytes(r['image_path'], tuple(int(v) for v in r['image_size']))
        yield r['annotation_index'], example

  return PoseInstances


class DecodedSource:
  """Random access to a packed split: instance dicts whose ``image`` is a decoded RGB PIL image,
  with ``image_index`` and ``annotation_index`` (int64: positions in the annotation file's
  ``images`` and ``annotations``, which lead back to the file's own ids) and the geometry,
  ``keypoints`` (K, 2) and ``keypoints_visible`` (K,) of :func:`vitpose_jax.data.coco.read_coco`'s
  records (the storage keeps COCO's (K, 3) [x, y, v] triplets; they are split here), and, where
  the annotation has a mask, ``segmentation`` (bytes: compressed RLE counts at ``image_size``;
  :func:`vitpose_jax.data.coco.decode_segmentation`). Unlabelled data (``labels=False``) has zero
  keypoints and visibilities.

  PIL rather than numpy: the crop warps it in PIL, and the round trip through an (H, W, 3) array
  would copy every pixel twice more than decoding itself writes them.
  """

  def __init__(self, records):
    self._records = records  # tfds data source, the image left encoded

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._records[index]
    triplets = record['keypoints']
    out = {**record, 'image': decode_packed(record['image']), 'keypoints': triplets[:, :2],
           'keypoints_visible': triplets[:, 2]}
    if not out['segmentation']:
      del out['segmentation']
    return out


@dataclasses.dataclass(frozen=True)
class PackedDataset:
  """A packed dataset on disk: open ``split`` with :meth:`source`."""

  path: str  # the TFDS data_dir

  @property
  def builder_dir(self) -> str:
    return os.path.join(self.path, _BUILDER_NAME, f'{PACK_VERSION}.0.0')

  def source(self, split: str) -> DecodedSource:
    import tensorflow_datasets as tfds

    if not os.path.isdir(self.builder_dir):
      versions = os.path.dirname(self.builder_dir)
      found = sorted(os.listdir(versions)) if os.path.isdir(versions) else []
      # A folder `prepare` wrote with an older packing version: its images may differ.
      raise DataError(f'{self.path}: no dataset of packing version {PACK_VERSION}.0.0'
                      + (f' (it holds {", ".join(found)}; pack it again)' if found else ''))
    builder = tfds.builder_from_directory(self.builder_dir)
    return DecodedSource(builder.as_data_source(
        split=split, decoders={'image': tfds.decode.SkipDecoding()}))

  def skip_report(self) -> str:
    with open(os.path.join(self.path, 'skips.json')) as f:
      return json.load(f)['summary']


def pack_coco(
    annotations: str,
    images: str,
    schema: Schema,
    out_dir: str,
    *,
    split: str = 'train',
    strict: bool = False,
    labels: bool = True,
) -> tuple[PackedDataset, SkipReport]:
  """Reads a COCO-format dataset and writes it as a TFDS array_record dataset under ``out_dir``;
  ``labels=False`` reads no keypoints (see :func:`vitpose_jax.data.coco.read_coco`).

  The write goes to a temporary folder renamed into place at the end, so an interrupted or
  concurrent packing never leaves a half-written dataset where a reader looks.
  """
  import tensorflow_datasets as tfds

  # TFDS's own bars ("Shuffling .../incomplete...") would leak its internals into our output;
  # the callers say what is packed. The switch is TFDS's only one, and global.
  tfds.disable_progress_bar()
  records, report = read_coco(annotations, images, schema, strict=strict, labels=labels)
  parent = os.path.dirname(os.path.abspath(out_dir)) or '.'
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.packing-', dir=parent)
  try:
    builder = _builder_class()(
        splits={split: records}, num_keypoints=schema.num_keypoints, data_dir=tmp,
        description=f'{annotations} ({images}), schema {schema.name}',
    )
    builder.download_and_prepare()
    with open(os.path.join(tmp, 'skips.json'), 'w') as f:
      json.dump({'summary': report.summary(), 'counts': dict(report.counts),
                 'examples': report.examples, 'kept': report.kept}, f, indent=1)
    with open(os.path.join(tmp, 'schema.json'), 'w') as f:
      json.dump(schema.to_dict(), f, indent=1)
    try:
      os.rename(tmp, out_dir)
    except OSError:
      if not os.path.isdir(os.path.join(out_dir, _BUILDER_NAME)):
        raise
      # Another process packed the same dataset first; theirs is identical.
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return PackedDataset(out_dir), report


def cache_key(annotations: str, images: str, schema: Schema, **options) -> str:
  """A digest of what decides a packed dataset's contents."""
  annotations = os.path.abspath(annotations)
  try:
    stat = os.stat(annotations)
  except FileNotFoundError:
    raise DataError(f'{annotations}: annotation file not found') from None
  identity = {
      'annotations': annotations, 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns,
      'images': os.path.abspath(images), 'schema': schema.to_dict(), 'options': options,
      'pack_version': PACK_VERSION,
  }
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def packed_coco(
    annotations: str,
    images: str,
    schema: Schema,
    *,
    split: str = 'train',
    strict: bool = False,
    labels: bool = True,
    cache_dir: str | None = None,
) -> PackedDataset:
  """The cached packed dataset of a COCO-format file, packing it on first use (saying so, and how
  many instances it packed in how long, on stdout); ``labels`` as :func:`pack_coco`'s."""
  key = cache_key(annotations, images, schema, split=split, strict=strict, labels=labels)
  stem = os.path.splitext(os.path.basename(annotations))[0]
  out = os.path.join(cache_dir or cache_root(), 'packed', f'{stem}-{schema.name}-{key}')
  if os.path.isdir(os.path.join(out, _BUILDER_NAME)):
    packed = PackedDataset(out)
    logging.info('using packed %s', out)
  else:
    print(f'packing {annotations} ({schema.name}) into {out}', flush=True)
    start = time.monotonic()
    packed, report = pack_coco(annotations, images, schema, out, split=split, strict=strict,
                               labels=labels)
    print(f'packed {report.kept} instances in {time.monotonic() - start:.0f} s', flush=True)
  summary = packed.skip_report()
  # Skips are reported once each time a dataset is opened: a user must see what training lacks.
  logging.log(logging.INFO if summary.endswith('none skipped') else logging.WARNING, '%s', summary)
  return packed
