"""Evaluator plug-ins, selected by ``config.evals`` entries with a ``type`` key.

An evaluator runs a :class:`vitpose_jax.predict.Predictor` over one task's validation data and
returns flat metrics named as DESIGN §3.5 (``<task>/AP``, ``<task>/PCK@0.2``, ...), including
``<task>/box_source``: every reported AP says whether ground-truth or detector boxes were used.

    evals = {'coco': dict(type='keypoints', task='coco',
                          data=dict(source='synthetic', population='adult', num=200))}
    metrics = run_evaluators(evals, predictor)   # adds mean/AP over the tasks
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from vitpose_jax.data import coco, pipeline, transforms
from vitpose_jax.data.coco import DataError
from vitpose_jax.data.images import read_image
from vitpose_jax.evaluation import metrics
from vitpose_jax.skeletons import Skeleton

EVALUATORS: dict[str, type] = {}


def register(name: str):
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


def detection_records(detections: str, annotations: str, images: str, *,
                      aspect_ratio: float = 0.75, score_threshold: float = 0.0):
  """Person boxes from a COCO detection-results JSON as instance records (no keypoints), for the
  images of the annotation file: the official pipeline's ``use_gt_bbox=False`` input."""
  try:
    with open(detections) as f:
      dets = json.load(f)
    with open(annotations) as f:
      image_info = {img['id']: img for img in json.load(f)['images']}
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f'cannot read detections {detections} with {annotations}: {e}') from None
  if not isinstance(dets, list):
    raise DataError(f'{detections}: not a COCO results list')
  records = []
  for i, det in enumerate(dets):
    if det.get('category_id', 1) != 1 or det.get('score', 1.0) < score_threshold:
      continue
    info = image_info.get(det.get('image_id'))
    box = det.get('bbox')
    if info is None or not (isinstance(box, list) and len(box) == 4 and box[2] > 0 and box[3] > 0):
      raise DataError(f'{detections}: detection {i} has an unknown image_id or a bad bbox')
    center, scale = coco.box_to_center_scale(box, aspect_ratio)
    records.append({'image_path': os.path.join(images, info['file_name']),
                    'image_id': int(info['id']), 'instance_id': i, 'bbox': np.float32(box),
                    'center': center, 'scale': scale, 'box_score': np.float32(det.get('score', 1))})
  if not records:
    raise DataError(f'{detections}: no person detection above score {score_threshold}')
  return records


@register('keypoints')
class KeypointEvaluator:
  """COCO OKS AP/AR with the schema's sigmas (per part for schemas with parts, e.g. WholeBody),
  PCK@0.2 and, where the schema has a head segment, PCKh@0.5 (ground-truth boxes only).

  Args:
    task: the model task to evaluate.
    data: a data spec (DESIGN §3.4): ``dict(source='synthetic', population=, num=, seed=)``
      (its ``val`` split) or ``dict(source='coco', annotations=, images=)``.
    detections: optional COCO detection-results JSON: evaluate on these boxes, with OKS-NMS
      (``nms_threshold``) and rescoring, as the official COCO numbers are.
    batch_size: crops per forward pass.
    results_out: optional path to write the predictions in COCO results format.
  """

  def __init__(self, *, task: str, data: Mapping[str, Any], detections: str | None = None,
               batch_size: int = 32, nms_threshold: float = 0.9, results_out: str | None = None,
               cache_dir: str | None = None):
    self.task, self.data, self.detections = task, dict(data), detections
    self.batch_size, self.nms_threshold, self.results_out = batch_size, nms_threshold, results_out
    self.cache_dir = cache_dir

  def _files(self) -> tuple[str, str]:
    spec = dict(self.data)
    kind = spec.pop('source', None)
    if kind == 'synthetic':
      return pipeline.synthetic_dataset(spec['population'], 'val', int(spec['num']),
                                        int(spec.get('seed', 0)), self.cache_dir)
    if kind == 'coco':
      return spec['annotations'], spec['images']
    raise DataError(f"evaluator {self.task!r}: data source {kind!r} is not 'synthetic' or 'coco'")

  def run(self, predictor) -> dict[str, Any]:
    skeleton: Skeleton = predictor.config.task(self.task).skeleton
    annotations, images = self._files()
    height, width = predictor.config.image_size
    gt_records, _ = coco.read_coco(annotations, images, skeleton, aspect_ratio=width / height)
    if self.detections:
      records = detection_records(self.detections, annotations, images,
                                  aspect_ratio=width / height)
      box_source = f'detections ({os.path.basename(self.detections)})'
    else:
      records = [{**r, 'box_score': np.float32(1.0)} for r in gt_records]
      box_source = 'ground truth'
    for r in records:
      r.setdefault('keypoints', np.zeros((skeleton.num_keypoints, 3), np.float32))
    sizes = {r['image_path']: tuple(int(v) for v in r['image_size']) for r in gt_records}
    steps = [LoadImage(sizes), *transforms.eval_transforms(skeleton, predictor.config.image_size)]
    results = []
    for batch, valid in pipeline.eval_batches(records, steps, self.batch_size):
      kps = predictor.keypoints(self.task, batch['image'], batch['center'], batch['scale'],
                                batch['rotation'])
      for i in range(valid):
        results.append({
            'image_id': int(batch['image_id'][i]), 'category_id': 1,
            'instance_id': int(batch['instance_id'][i]),
            'keypoints': [round(float(v), 3) for v in kps[i].reshape(-1)],
            'score': float(batch['box_score'][i]),
        })
    results = metrics.rescore(results)
    if self.detections:
      results = metrics.nms_per_image(results, skeleton, self.nms_threshold,
                                      aspect_ratio=width / height)
    if self.results_out:
      with open(self.results_out, 'w') as f:
        json.dump(results, f)
    prefix = f'{self.task}/'
    scorer = metrics.wholebody_metrics if skeleton.parts else metrics.coco_keypoint_metrics
    out: dict[str, Any] = scorer(annotations, results, skeleton, prefix=prefix)
    if not self.detections:
      out.update(metrics.pck_metrics(gt_records, results, skeleton, prefix=prefix))
    out[f'{prefix}box_source'] = box_source
    out[f'{prefix}instances'] = len(results)
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
  """Runs every configured evaluator; adds ``mean/AP`` over the tasks' ``<task>/AP``."""
  out: dict[str, Any] = {}
  for name, config in evals.items():
    try:
      evaluator = make_evaluator(config, **defaults)
    except (TypeError, ValueError) as e:
      raise ValueError(f'evals.{name}: {e}') from None
    out.update(evaluator.run(predictor))
  aps = [v for k, v in out.items() if k.endswith('/AP') and k.count('/') == 1]
  if aps:
    out['mean/AP'] = float(np.mean(aps))
  return out
