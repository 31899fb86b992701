"""Evaluator plug-ins, selected by ``config.evals`` entries with a ``type`` key.

An evaluator runs a :class:`vitpose_jax.predict.Predictor` over one task's validation data and
returns flat metrics named as in docs/design.md (``<task>/AP``, ``<task>/PCK@0.2``, ...), including
``<task>/box_source``: every reported AP says whether ground-truth or detector boxes were used.

In a run of several processes every process calls the evaluators together: each loads and crops
its share of every batch, the predictor runs the whole batch over the devices of all of them, the
keypoints are gathered, and every process scores the same results (process 0 alone writes files).

    evals = {'coco': dict(type='keypoints', task='coco',
                          data=dict(source='synthetic', population='adult', num=200))}
    metrics = run_evaluators(evals, predictor)   # adds mean/AP over the tasks
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

from vitpose_jax.data import coco, pipeline, sources, transforms
from vitpose_jax.data.coco import DataError
from vitpose_jax.data.images import read_image
from vitpose_jax.evaluation import metrics
from vitpose_jax.skeletons import Schema

EVALUATORS: dict[str, type] = {}


def register(name: str):
  """Registers an evaluator class as ``type=name`` in ``config.evals`` entries. It is built with
  the entry's other fields plus ``name``, the entry's name, which prefixes its metrics
  (``<name>/AP``), and ``run(predictor)`` returns them."""
  def wrap(cls):
    EVALUATORS[name] = cls
    return cls
  return wrap


class LoadImage(grain.transforms.Map):
  """Reads the instance's ``image_path`` into ``image`` (uint8 RGB (H, W, 3)) as training reads
  it (:func:`vitpose_jax.data.images.read_image`). ``sizes``: (width, height) by image path, the
  sizes :func:`vitpose_jax.data.coco.read_coco` checked the labels against; they pick the
  orientation of images that have EXIF orientation."""

  def __init__(self, sizes: Mapping[str, tuple[int, int]] | None = None):
    self._sizes = dict(sizes or {})

  def map(self, element):
    image = read_image(element['image_path'], self._sizes.get(element['image_path']))
    return {**element, 'image': np.asarray(image)}


def process_rows(num: int, batch_size: int, process: int, count: int) -> list[int]:
  """The rows of ``num`` instances that process ``process`` of ``count`` crops: each global batch
  of ``batch_size × count`` rows gives each process ``batch_size`` consecutive ones, in process
  order. Only the last share may be short; one that is empty is ``[-1]``, a padding row, so that
  every process runs as many batches."""
  rows = []
  for start in range(0, num, batch_size * count):
    first = start + process * batch_size
    rows += list(range(first, min(first + batch_size, num))) or [-1]
  return rows


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and bool(np.isfinite(value))


def detection_records(detections: str, annotations: str, images: str,
                      categories: coco.KeypointCategories, *, aspect_ratio: float = 0.75,
                      score_threshold: float = 0.0
                      ) -> tuple[list[dict[str, Any]], coco.SkipReport]:
  """Boxes from a COCO detection-results JSON as instance records (no keypoints), for the images
  of the annotation file: the official pipeline's ``use_gt_bbox=False`` input; and the report of
  the detections left out.

  Records: ``image_path``, ``image_id`` (the annotation file's own id), ``instance_id`` (the
  detection's position in the file), ``category_id`` (as the file writes it), ``bbox`` float32
  (4,) [x, y, w, h] pixels, ``center`` / ``scale`` (2,) as
  :func:`vitpose_jax.data.coco.box_to_center_scale`, ``box_score``.

  Only detections of the schema's keypoint ``categories`` (``read_coco``'s
  ``report.categories``) are kept. The others, those scoring below ``score_threshold``, and
  those that name an image the annotation file lacks, whose box is not a finite [x, y, w, h]
  with w, h > 0 or whose score is not a finite number, are skipped and counted in the report
  with their values: one bad line of a detector's output does not void the rest. DataError: an
  unreadable file, a repeated image id, or no detection left, saying why.
  """
  try:
    with open(detections) as f:
      dets = json.load(f)
    with open(annotations) as f:
      image_list = json.load(f)['images']
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f'cannot read detections {detections} with {annotations}: {e}') from None
  if not isinstance(dets, list):
    raise DataError(f'{detections}: not a COCO results list')
  image_info = {image_id: image_list[i]
                for image_id, i in coco.image_indices(image_list, annotations).items()}
  records, report = [], coco.SkipReport(source=detections)
  for i, det in enumerate(dets):
    if not isinstance(det, dict):
      report.add('malformed', f'detection {i}: {det!r:.60} is not an object')
      continue
    category = categories.of(det)
    if category is None:
      report.add('other category', f'detection {i}: {categories.refusal(det)} of {annotations}')
      continue
    if not _number(det.get('score', 1.0)):
      report.add('bad score', f'detection {i}: score {det.get("score")!r:.40}')
      continue
    if det.get('score', 1.0) < score_threshold:
      report.add('below the score threshold',
                 f'detection {i}: score {det.get("score")} < {score_threshold}')
      continue
    image_id, box = det.get('image_id'), det.get('bbox')
    if not isinstance(image_id, (int, float, str)) or image_id not in image_info:
      report.add('unknown image',
                 f'detection {i}: image_id {image_id!r:.40} is not in {annotations}')
      continue
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)
            and box[2] > 0 and box[3] > 0):
      report.add('bad bbox', f'detection {i}: bbox {box!r:.60} is not [x, y, w, h] with w, h > 0')
      continue
    info = image_info[image_id]
    center, scale = coco.box_to_center_scale(box, aspect_ratio)
    records.append({'image_path': os.path.join(images, info['file_name']),
                    'image_id': info['id'], 'instance_id': i,
                    'category_id': category.id, 'bbox': np.float32(box),
                    'center': center, 'scale': scale, 'box_score': np.float32(det.get('score', 1))})
  report.kept = len(records)
  if not records:
    raise DataError(f'{detections}: no detection left to evaluate ({report.summary()})')
  return records, report


@register('keypoints')
class KeypointEvaluator:
  """COCO OKS AP/AR with the schema's sigmas (per part for schemas with parts, e.g. WholeBody),
  PCK@0.2 and, where the schema has a head segment, PCKh@0.5 (ground-truth boxes only).

  Args:
    task: the model task to evaluate.
    data: a data spec (docs/design.md) of any registered source kind
      (:mod:`vitpose_jax.data.sources`), read as its ``val`` split: e.g.
      ``dict(source='coco', annotations=, images=)`` or
      ``dict(source='synthetic', population=, num=, seed=)``.
    detections: optional COCO detection-results JSON: evaluate on these boxes, with OKS-NMS
      (``nms_threshold``) and rescoring, as the official COCO numbers are. Only detections of
      the categories holding the schema's keypoints are used; ``<task>/detections_skipped``
      counts the rest and ``<task>/detections_report`` says which and why.
    batch_size: crops per forward pass.
    results_out: optional path to write the predictions in COCO results format, each with the
      ``category_id`` of its instance (or detection) exactly as the data writes it.
    name: the metrics' prefix (default: ``task``); :func:`run_evaluators` passes the evals
      entry's name, so that two evaluations of one task (its val data and a target population,
      say) keep apart.
  """

  def __init__(self, *, task: str, data: Mapping[str, Any], detections: str | None = None,
               batch_size: int = 32, nms_threshold: float = 0.9, results_out: str | None = None,
               cache_dir: str | None = None, name: str | None = None):
    self.task, self.data, self.detections = task, dict(data), detections
    self.name = name or task
    self.batch_size, self.nms_threshold, self.results_out = batch_size, nms_threshold, results_out
    self.cache_dir = cache_dir

  def _files(self) -> tuple[str, str]:
    try:
      return sources.files(self.data, 'val', cache_dir=self.cache_dir)
    except DataError as e:
      raise DataError(f'evaluator {self.task!r}: {e}') from None

  def run(self, predictor) -> dict[str, Any]:
    """The task's metrics, prefixed ``<name>/`` (the task's name by default): those of the scorer (COCO AP/AR and their
    counts; per part for schemas with parts), PCK on ground-truth boxes, ``box_source``,
    ``instances`` (predictions scored), ``gt_missed_by_loader`` (ground-truth instances the
    loader skipped, e.g. for a missing image, that the AP still scores: each is a miss), with
    detections ``detections_skipped`` and ``detections_report`` (the detections file's
    :class:`~vitpose_jax.data.coco.SkipReport` summary), and ``skipped``, one line naming what
    the loader or the detections file skipped and why, when anything was (also logged)."""
    schema: Schema = predictor.config.task(self.task).schema
    annotations, images = self._files()
    height, width = predictor.config.image_size
    gt_records, loader = coco.read_coco(annotations, images, schema, aspect_ratio=width / height)
    prefix = f'{self.name}/'
    out: dict[str, Any] = {}
    skipped = []
    if self.detections:
      records, detector = detection_records(self.detections, annotations, images,
                                            loader.categories, aspect_ratio=width / height)
      box_source = f'detections ({os.path.basename(self.detections)})'
      out[f'{prefix}detections_skipped'] = detector.skipped
      out[f'{prefix}detections_report'] = detector.summary()
      if detector.skipped:
        skipped.append(detector.summary())
    else:
      records = [{**r, 'box_score': np.float32(1.0)} for r in gt_records]
      box_source = 'ground truth'
      kept = {r['annotation_index'] for r in gt_records}
      missed = [p for p in metrics.scored_annotations(annotations, schema) if p not in kept]
      out[f'{prefix}gt_missed_by_loader'] = len(missed)
      if loader.skipped:
        skipped.append(loader.summary())
    # The pipeline sees numbers only: ids may be strings and category ids are kept as the file
    # writes them (2, "1"), so the results take them from `records` by position. Padding rows
    # (index −1, and the repeats that fill a last batch) are dropped.
    count = jax.process_count()
    batch_size = -(-self.batch_size // count)
    if count > 1:  # the predictor splits each process's rows over its devices
      batch_size = -(-batch_size // jax.local_device_count()) * jax.local_device_count()
    rows = process_rows(len(records), batch_size, jax.process_index(), count)
    inputs = []
    for i in rows:
      r = records[max(i, 0)]
      inputs.append({'image_path': r['image_path'], 'center': r['center'], 'scale': r['scale'],
                     'index': np.int64(i)})
    sizes = {r['image_path']: tuple(int(v) for v in r['image_size']) for r in gt_records}
    steps = [LoadImage(sizes),
             *transforms.eval_transforms(schema, predictor.config.image_size)]
    keypoints, index = [], []
    for batch, valid in pipeline.eval_batches(inputs, steps, batch_size):
      keypoints.append(predictor.keypoints(self.task, batch['image'], batch['center'],
                                           batch['scale'], batch['rotation']))
      index.append(np.where(np.arange(batch_size) < valid, batch['index'], -1))
    keypoints = np.concatenate(keypoints) if keypoints else np.zeros((0, schema.num_keypoints, 3))
    index = np.concatenate(index) if index else np.zeros(0, np.int64)
    if count > 1:
      keypoints = np.asarray(multihost_utils.process_allgather(keypoints)).reshape(
          -1, *keypoints.shape[1:])
      index = np.asarray(multihost_utils.process_allgather(index)).reshape(-1)
    results = []
    for i in np.argsort(index, kind='stable'):
      if index[i] < 0:
        continue
      record = records[int(index[i])]
      results.append({
          'image_id': record['image_id'], 'category_id': record['category_id'],
          'instance_id': record['instance_id'],
          'keypoints': [round(float(v), 3) for v in keypoints[i].reshape(-1)],
          'score': float(record['box_score']),
      })
    results = metrics.rescore(results)
    if self.detections:
      results = metrics.nms_per_image(results, schema, self.nms_threshold,
                                      aspect_ratio=width / height)
    if self.results_out and jax.process_index() == 0:
      with open(self.results_out, 'w') as f:
        json.dump(results, f)
    scorer = metrics.wholebody_metrics if schema.parts else metrics.coco_keypoint_metrics
    out.update(scorer(annotations, results, schema, prefix=prefix))
    if not self.detections:
      out.update(metrics.pck_metrics(gt_records, results, schema, prefix=prefix))
    out[f'{prefix}box_source'] = box_source
    out[f'{prefix}instances'] = len(results)
    if skipped:
      out[f'{prefix}skipped'] = '; '.join(skipped)
      logging.warning('%s: %s', self.task, out[f'{prefix}skipped'])
    return out


def make_evaluator(config: Mapping[str, Any], **defaults):
  """An evaluator from a ``config.evals`` entry: ``type`` picks the class, the rest are its
  arguments."""
  config = dict(config)
  kind = config.pop('type', None)
  if kind not in EVALUATORS:
    raise ValueError(f'evaluator type {kind!r} is not one of {sorted(EVALUATORS)}')
  return EVALUATORS[kind](**{**defaults, **config})


def run_evaluators(evals: Mapping[str, Mapping[str, Any]], predictor, **defaults):
  """Runs every configured evaluator, each entry's metrics prefixed with its name
  (``evals.<name>``: ``<name>/AP``, ...); adds ``mean/AP``, the mean of their ``<name>/AP``.

  A task whose AP is -1 (COCOeval's "no ground truth to score") has no AP to average: it is left
  out and named in ``mean/excluded``. When no task has an AP >= 0, ``mean/AP`` is -1 too.
  """
  out: dict[str, Any] = {}
  for name, config in evals.items():
    try:
      evaluator = make_evaluator({'name': name, **config}, **defaults)
    except (TypeError, ValueError) as e:
      raise ValueError(f'evals.{name}: {e}') from None
    out.update(evaluator.run(predictor))
  aps = {k[:-len('/AP')]: v for k, v in out.items() if k.endswith('/AP') and k.count('/') == 1}
  if aps:
    scored = [v for v in aps.values() if v >= 0]
    out['mean/AP'] = float(np.mean(scored)) if scored else -1.0
    excluded = sorted(task for task, v in aps.items() if v < 0)
    if excluded:
      out['mean/excluded'] = f'{", ".join(excluded)} (AP -1: no ground truth to score)'
      logging.warning('mean/AP leaves out %s', out['mean/excluded'])
  return out
