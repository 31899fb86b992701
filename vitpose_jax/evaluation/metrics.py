"""Pose metrics: COCO OKS AP/AR for any schema, WholeBody per part, PCK/PCKh, OKS-NMS, rescoring.

Predictions are COCO results: a list of ``{'image_id', 'category_id', 'keypoints': flat K*3
[x, y, score], 'score', 'bbox' (optional, [x, y, w, h] of the input box), 'instance_id'
(optional, the GT annotation id when GT boxes were used)}`` with all K keypoints of the schema in
schema order. Ground truth is a COCO-format file or dict in any layout
:func:`vitpose_jax.data.coco.annotation_keypoints` reads (COCO-WholeBody split fields included).
Only its categories holding the schema's keypoints are scored
(:func:`vitpose_jax.data.coco.keypoint_categories`); a result's ``category_id`` must be one of
them, exactly as the file writes it (``2``, ``"1"``), or absent when there is only one: any other
is a :class:`ResultsError` naming the result, not a silent miss.
Coordinates are pixels, x right, y down.

Semantics follow mmpose (``mmpose/evaluation``) and the official ViTPose evaluation
(``TopDownCocoDataset.evaluate``): ``CocoMetric``/``CocoWholeBodyMetric`` for AP, their OKS-NMS
and ``bbox_keypoint`` rescoring, ``keypoint_pck_accuracy`` for PCK and PCKh.

Where we differ from pycocotools/xtcocotools on purpose:

- Ids. Image and annotation ids may be any JSON scalar (0, negative, beyond 2**53, strings).
  pycocotools is handed our own ids (images, annotations and keypoint categories numbered from 1
  in file order), so an id's value never changes a score: pycocotools takes a matched ground
  truth's id as its "matched" flag, and an id of 0 (or a negative one) read as "no match". Exact
  score ties between images are broken by file order (pycocotools: by image id). Results name
  images and categories by the file's own ids. An image or annotation id that appears twice is
  an error naming it and the file.
- Non-finite results. A result with a NaN or infinite keypoint value or score is not scored and
  is counted (``results_non_finite``): it can match nothing, so its person counts as a miss
  (pycocotools would let a NaN OKS match anything and score AP 1.0).
- Ground-truth area. A missing, zero, negative or non-finite ``area`` is replaced by 0.53 × the
  box area and counted (``gt_area_estimated``); pycocotools would divide by it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vitpose_jax.data.coco import (
    WHOLEBODY_FIELDS,
    KeypointCategories,
    KeypointCategory,
    annotation_keypoints,
    box_to_center_scale,
    check_annotation_ids,
    image_indices,
    keypoint_categories,
)
from vitpose_jax.skeletons import Schema

# COCOeval.stats[0..9] for iouType 'keypoints'.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl')
# What each score reports besides STAT_NAMES: the counts behind the numbers.
COUNT_NAMES = ('gt_instances', 'gt_area_estimated', 'gt_unknown_image', 'results_non_finite')
# A COCO-format annotation file's path or its loaded dict; a list of COCO keypoint results.
GroundTruth = str | os.PathLike[str] | Mapping[str, Any]
Results = Sequence[Mapping[str, Any]]


class ResultsError(ValueError):
  """A result that cannot be scored; the message names it by position and image id."""


# A GT without 'area' gets 0.53 x its box area, xtcocotools' stand-in (its use_area=False path,
# which mmpose uses for datasets without segmentations).
_BOX_TO_AREA = 0.53


@dataclasses.dataclass
class _GroundTruth:
  """GT assembled in schema order for COCOeval, under our own ids: ``images`` [{'id': 1..N}],
  ``categories`` [{'id': 1..C}], ``annotations`` every field COCOeval reads except the keypoints
  (ids 1..G), which live in ``keypoints`` float64 (G, K, 3) [x, y, v] so parts slice them. Only
  the schema's keypoint categories (``keypoint_categories``) are kept. ``image_ids`` and
  ``category_ids`` map the file's images and keypoint categories to our ids; ``positions`` gives
  each annotation's position in the file."""

  images: list[dict[str, Any]]
  categories: list[dict[str, Any]]
  annotations: list[dict[str, Any]]
  keypoints: np.ndarray
  keypoint_categories: KeypointCategories
  image_ids: dict[Any, int]
  category_ids: dict[KeypointCategory, int]
  positions: list[int]
  counts: dict[str, int]


def _usable_area(area: Any) -> bool:
  try:
    return bool(np.isfinite(float(area)) and float(area) > 0)
  except (TypeError, ValueError):
    return False


def _ground_truth(gt: GroundTruth, schema: Schema) -> _GroundTruth:
  if isinstance(gt, Mapping):
    data, source = gt, 'ground truth'
  else:
    source = os.fspath(gt)
    with open(source) as f:
      data = json.load(f)
  # Our ids in file order: then no id's value (0, negative, huge, a string) can change a score.
  image_ids = {image_id: i + 1 for image_id, i in image_indices(data['images'], source).items()}
  check_annotation_ids(data['annotations'], source)
  categories = keypoint_categories(data, schema, source)
  category_ids = {c: i + 1 for i, c in enumerate(categories.categories)}
  k = schema.num_keypoints
  annotations, keypoints, positions = [], [], []
  counts = dict.fromkeys(('gt_instances', 'gt_area_estimated', 'gt_unknown_image'), 0)
  for position, ann in enumerate(data['annotations']):
    category = categories.of(ann)
    if category is None:
      continue  # another category's objects: the schema's keypoints are not theirs to score
    ann_id = ann.get('id')
    if not isinstance(ann.get('image_id'), Hashable) or ann['image_id'] not in image_ids:
      # COCOeval only visits the listed images, so it never scores these; we count them.
      counts['gt_unknown_image'] += 1
      continue
    iscrowd = int(ann.get('iscrowd', 0))
    if iscrowd and not any(f in ann for f in WHOLEBODY_FIELDS.values()):
      # COCO crowd regions carry no keypoints; COCOeval only needs their box.
      kpts = np.zeros((k, 3))
    else:
      try:
        kpts = annotation_keypoints(ann, schema, category.keypoint_names)
      except ValueError as e:
        raise ValueError(f'{source}: annotation {ann_id}: {e}') from None
    bbox = [float(v) for v in np.asarray(ann.get('bbox', []), np.float64).reshape(-1)]
    if len(bbox) != 4:
      raise ValueError(f'{source}: annotation {ann_id}: bbox {ann.get("bbox")!r} is not '
                       '[x, y, w, h]')
    scored = not iscrowd and bool((np.asarray(kpts)[:, 2] > 0).any())
    area = ann.get('area')
    if not _usable_area(area):
      # OKS divides by the area: a zero one fails results a pixel off, a negative one passes
      # anything. Missing, zero, negative and non-finite areas all get the estimate.
      area = _BOX_TO_AREA * bbox[2] * bbox[3]
      counts['gt_area_estimated'] += scored
    counts['gt_instances'] += scored
    annotations.append({
        'id': len(annotations) + 1, 'image_id': image_ids[ann['image_id']],
        'category_id': category_ids[category], 'iscrowd': iscrowd, 'bbox': bbox,
        'area': float(area),
    })
    keypoints.append(np.asarray(kpts, np.float64))
    positions.append(position)
  images = [{'id': i} for i in image_ids.values()]
  return _GroundTruth(images, [{'id': i, 'name': c.name} for c, i in category_ids.items()],
                      annotations, np.asarray(keypoints, np.float64).reshape(-1, k, 3),
                      categories, image_ids, category_ids, positions, counts)


def _result_keypoints(results: Results, schema: Schema) -> np.ndarray:
  """The results' keypoints as float64 (N, K, 3) [x, y, score]; ValueError on a bad result."""
  k = schema.num_keypoints
  out = np.zeros((len(results), k, 3))
  for i, r in enumerate(results):
    if not isinstance(r, Mapping) or 'keypoints' not in r:
      raise ResultsError(f'result {i} is not an object with keypoints: {r!r:.80}')
    try:
      values = np.asarray(r['keypoints'], np.float64).reshape(-1)
    except (TypeError, ValueError):
      raise ResultsError(f'result {i} (image {r.get("image_id")!r}): keypoints are not numbers: '
                       f'{r["keypoints"]!r:.80}') from None
    if values.size != 3 * k:
      raise ResultsError(f'result {i} (image {r.get("image_id")!r}) holds {values.size} keypoint '
                       f'values, expected {3 * k} for schema {schema.name}')
    out[i] = values.reshape(k, 3)
  return out


def _result_scores(results: Results) -> np.ndarray:
  """The results' instance scores (N,) float64; ValueError naming a result without one."""
  scores = np.zeros(len(results))
  for i, r in enumerate(results):
    try:
      scores[i] = float(r['score'])
    except (KeyError, TypeError, ValueError):
      raise ResultsError(f'result {i} (image {r.get("image_id")!r}): score '
                       f'{r.get("score")!r:.40} is not a number') from None
  return scores


@dataclasses.dataclass
class _Detections:
  """Results ready for COCOeval: ``keypoints`` (N, K, 3), ``scores`` (N,), ``image_ids`` and
  ``category_ids`` (N,) under our ids, ``finite`` (N,) whether every value is finite (the others
  are not scored), ``areas`` (N,) and ``boxes`` (N, 4) [x, y, w, h] of the sizing keypoints'
  extent."""

  keypoints: np.ndarray
  scores: np.ndarray
  image_ids: list[int]
  category_ids: list[int]
  finite: np.ndarray
  areas: np.ndarray
  boxes: np.ndarray


def _size_slice(schema: Schema) -> slice:
  """The keypoints whose extent sizes a prediction: the body part where the schema has one, as
  xtcocotools sizes a COCO-WholeBody result by its ``keypoints`` field (the 17 body points),
  else all of them."""
  for part, start, stop in schema.parts:
    if part == 'body':
      return slice(start, stop)
  return slice(None)


def _detections(truth: _GroundTruth, results: Results, schema: Schema) -> _Detections:
  kpts, scores = _result_keypoints(results, schema), _result_scores(results)
  image_ids, category_ids = [], []
  for i, r in enumerate(results):
    if not isinstance(r.get('image_id'), Hashable) or r['image_id'] not in truth.image_ids:
      by_text = {str(k): k for k in truth.image_ids}
      hint = (f' (it has {by_text[str(r.get("image_id"))]!r}: ids must match in type too)'
              if str(r.get('image_id')) in by_text else '')
      raise ResultsError(f'result {i}: image_id {r.get("image_id")!r} is not in the ground '
                       f'truth{hint}')
    image_ids.append(truth.image_ids[r['image_id']])
    category = truth.keypoint_categories.of(r)
    if category is None:
      # COCOeval would score it as a miss of every ground truth, without a word.
      raise ResultsError(f'result {i} (image {r.get("image_id")!r}): '
                         f'{truth.keypoint_categories.refusal(r)} of '
                         f'{truth.keypoint_categories.source}, whose keypoints are scored')
    category_ids.append(truth.category_ids[category])
  finite = np.isfinite(kpts).all(axis=(1, 2)) & np.isfinite(scores)
  sizing = np.where(finite[:, None, None], kpts, 0.0)[:, _size_slice(schema), :2]
  low, high = sizing.min(1), sizing.max(1)
  wh = high - low
  return _Detections(kpts, scores, image_ids, category_ids, finite, wh[:, 0] * wh[:, 1],
                     np.concatenate([low, wh], axis=1))


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
  coco = COCO()
  coco.dataset = {'images': images, 'categories': categories, 'annotations': annotations}
  coco.createIndex()
  return coco


def _oks_stats(gt: _GroundTruth, dets: _Detections, part: slice,
               sigmas: Sequence[float]) -> np.ndarray:
  """COCOeval(iouType='keypoints').stats (10,) on the ``part`` slice of GT and predictions."""
  gt_anns = []
  for ann, kpts in zip(gt.annotations, gt.keypoints[:, part]):
    # COCOeval ignores a GT whose num_keypoints is 0, so an instance whose part is unlabelled
    # drops out of that part's evaluation (xtcocotools' per-part count, as mmpose's metric).
    gt_anns.append(dict(ann, keypoints=kpts.reshape(-1).tolist(),
                        num_keypoints=int((kpts[:, 2] > 0).sum())))
  dt_anns = []
  for i, kpts in enumerate(dets.keypoints[:, part]):
    if not dets.finite[i] or not (kpts[:, 2] > 0).any():
      # A non-finite result is counted, not scored. xtcocotools, which mmpose and the official
      # ViTPose evaluate with, drops a prediction whose scores in the evaluated slice are all
      # <= 0; pycocotools alone would keep it.
      continue
    # Area and box from the keypoint extent, as loadRes sets them for keypoint results (a
    # result's own 'bbox' would send loadRes down its box branch instead); the extent of the
    # body points for every part of a WholeBody result, as xtcocotools.
    dt_anns.append({'id': len(dt_anns) + 1, 'image_id': dets.image_ids[i],
                    'category_id': dets.category_ids[i], 'keypoints': kpts.reshape(-1).tolist(),
                    'score': float(dets.scores[i]), 'area': float(dets.areas[i]),
                    'bbox': dets.boxes[i].tolist()})
  # pycocotools reports progress on stdout; metrics are returned, not printed.
  with contextlib.redirect_stdout(io.StringIO()):
    coco_eval = COCOeval(_coco(gt.images, gt.categories, gt_anns),
                         _coco(gt.images, gt.categories, dt_anns), iouType='keypoints')
    coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return np.asarray(coco_eval.stats, np.float64)


def _prepare(gt, results, schema) -> tuple[_GroundTruth, _Detections, dict[str, int]]:
  truth = _ground_truth(gt, schema)
  dets = _detections(truth, results, schema)
  counts = dict(truth.counts, results_non_finite=int((~dets.finite).sum()))
  return truth, dets, counts


def scored_annotations(gt: GroundTruth, schema: Schema) -> list[int]:
  """Positions in the GT's ``annotations`` of the instances COCO AP scores (each one a miss
  unless a result matches it): of the schema's keypoint categories, not crowd, on a listed
  image, with a labelled keypoint."""
  truth = _ground_truth(gt, schema)
  return [p for p, ann, kpts in zip(truth.positions, truth.annotations, truth.keypoints)
          if not ann['iscrowd'] and (kpts[:, 2] > 0).any()]


def coco_keypoint_metrics(gt: GroundTruth, results: Results, schema: Schema, *,
                          prefix: str = '') -> dict[str, float]:
  """COCO OKS AP/AR of ``results`` against ``gt`` with the schema's sigmas, any K.

  Returns ``{prefix + name: value}`` for ``STAT_NAMES`` (AP, AP50, AP75, APm, APl, AR, AR50,
  AR75, ARm, ARl; COCOeval.stats[0..9], maxDets 20). No results give AP 0; -1 means the GT holds
  no instance with a labelled keypoint in that area range (COCOeval's convention). As xtcocotools
  (mmpose's evaluator), a result whose keypoint scores are all <= 0 is not scored.

  Results name images and categories by the GT file's own ids (any JSON scalar). The returned
  dict also holds ``COUNT_NAMES``: ``gt_instances`` (GT instances scored: of the schema's
  keypoint categories, not crowd, on a listed image, with a labelled keypoint),
  ``gt_area_estimated`` (of these, the ones whose ``area`` was missing, <= 0 or not finite and
  was replaced by 0.53 × the box area), ``gt_unknown_image`` (annotations of images not in
  ``images``: not scored, as COCOeval) and ``results_non_finite`` (results with a NaN or
  infinite keypoint value or score: not scored, so the person they were meant for counts as a
  miss).

  Raises DataError naming the file and the id for an image or annotation id that appears twice,
  and ResultsError naming the result for a result whose image_id is not in the GT, whose
  category_id is not one of the schema's keypoint categories, or that lacks a numeric score or
  holds the wrong number of keypoint values (both are ValueErrors).
  """
  truth, dets, counts = _prepare(gt, results, schema)
  stats = _oks_stats(truth, dets, slice(None), schema.sigmas)
  out = {prefix + name: float(v) for name, v in zip(STAT_NAMES, stats)}
  out.update({prefix + name: n for name, n in counts.items()})
  return out


def wholebody_metrics(gt: GroundTruth, results: Results, schema: Schema, *,
                      prefix: str = '') -> dict[str, float]:
  """Per-part and whole-body COCO OKS AP/AR, as mmpose's ``CocoWholeBodyMetric``.

  Each part of ``schema.parts`` is evaluated on its slice of GT and predicted keypoints with its
  slice of sigmas; GT instances with no labelled point in the part are ignored for that part.
  A prediction's area (which decides APm/APl) is the extent of its body points, as xtcocotools
  and mmpose size it. Returns ``AP_<part>`` and ``AR_<part>`` for every part plus the whole-body
  ``STAT_NAMES`` (AP, AP50, …) and ``COUNT_NAMES``, all prefixed. Ids, counts and errors as
  :func:`coco_keypoint_metrics`.
  """
  if not schema.parts:
    raise ValueError(f'schema {schema.name} has no parts; use coco_keypoint_metrics')
  truth, dets, counts = _prepare(gt, results, schema)
  out = {}
  for part, start, stop in schema.parts:
    stats = _oks_stats(truth, dets, slice(start, stop), schema.sigmas[start:stop])
    out[f'{prefix}AP_{part}'] = float(stats[0])
    out[f'{prefix}AR_{part}'] = float(stats[5])
  stats = _oks_stats(truth, dets, slice(None), schema.sigmas)
  out.update({prefix + name: float(v) for name, v in zip(STAT_NAMES, stats)})
  out.update({prefix + name: n for name, n in counts.items()})
  return out


def _pck_accuracy(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, threshold: float) -> float:
  """mmpose ``keypoint_pck_accuracy``: for each keypoint the fraction of counted instances with
  normalised distance < threshold, then the mean over keypoints counted at least once (0 when
  none). Counted: GT v > 0 and a positive normaliser."""
  mask = (gt[..., 2] > 0) & (norm > 0)[:, None]
  dist = np.linalg.norm(pred - gt[..., :2], axis=-1) / np.where(norm > 0, norm, 1.0)[:, None]
  counted = mask.sum(0)
  hits = ((dist < threshold) & mask).sum(0)
  valid = counted > 0
  return float(np.mean(hits[valid] / counted[valid])) if valid.any() else 0.0


def _check_pred_gt(pred, gt) -> tuple[np.ndarray, np.ndarray]:
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if pred.ndim != 3 or pred.shape[-1] != 2 or gt.shape != pred.shape[:2] + (3,):
    raise ValueError(f'pred must be (N, K, 2) and gt (N, K, 3), got {pred.shape} and {gt.shape}')
  return pred, gt


def pck(pred: np.ndarray, gt: np.ndarray, bboxes: np.ndarray, *, threshold: float = 0.2) -> float:
  """PCK normalised by each instance's bbox longer side (mmpose ``PCKAccuracy``, norm_item='bbox').

  pred (N, K, 2) [x, y]; gt (N, K, 3) [x, y, v], only v > 0 counts; bboxes (N, 4) [x, y, w, h].
  """
  pred, gt = _check_pred_gt(pred, gt)
  bboxes = np.asarray(bboxes, np.float64).reshape(len(gt), 4)
  return _pck_accuracy(pred, gt, bboxes[:, 2:].max(1), threshold)


def pckh(pred: np.ndarray, gt: np.ndarray, schema: Schema, *, threshold: float = 0.5) -> float:
  """PCKh: PCK normalised by each instance's GT head segment (``schema.head_segment``) length.

  pred (N, K, 2), gt (N, K, 3) [x, y, v]. Instances whose head segment has an unlabelled end (or
  zero length) are excluded, as mmpose excludes a zero normaliser.
  """
  if schema.head_segment is None:
    raise ValueError(f'schema {schema.name} has no head segment, so PCKh is undefined')
  pred, gt = _check_pred_gt(pred, gt)
  a, b = (schema.index(n) for n in schema.head_segment)
  labelled = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0)
  head = np.where(labelled, np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1), 0.0)
  return _pck_accuracy(pred, gt, head, threshold)


def pck_metrics(records: Sequence[Mapping[str, Any]], results: Results,
                schema: Schema, *, prefix: str = '', pck_threshold: float = 0.2,
                pckh_threshold: float = 0.5) -> dict[str, float]:
  """``PCK@0.2`` and, where the schema has a head segment, ``PCKh@0.5`` (prefixed).

  ``records``: GT instance records (``vitpose_jax.data.coco.read_coco``: ``instance_id``, ``bbox``
  [x, y, w, h], ``keypoints`` (K, 2), ``keypoints_visible`` (K,)). ``results``: predictions on GT
  boxes, each carrying the ``instance_id`` of its record; every record needs exactly one.
  """
  by_id = {}
  for i, r in enumerate(results):
    if 'instance_id' not in r:
      raise ValueError(f'result {i} has no instance_id; PCK pairs predictions with GT instances')
    if r['instance_id'] in by_id:
      raise ValueError(f'two results for instance {r["instance_id"]}')
    by_id[r['instance_id']] = i
  missing = [rec['instance_id'] for rec in records if rec['instance_id'] not in by_id]
  if missing:
    raise ValueError(f'{len(missing)} GT instances have no result, e.g. {missing[:3]}')
  matched = [results[by_id[rec['instance_id']]] for rec in records]
  pred = _result_keypoints(matched, schema)[..., :2]
  k = schema.num_keypoints
  gt = np.concatenate([
      np.asarray([rec['keypoints'] for rec in records], np.float64).reshape(len(records), k, 2),
      np.asarray([rec['keypoints_visible'] for rec in records], np.float64).reshape(
          len(records), k, 1)], axis=2)
  bboxes = np.asarray([rec['bbox'] for rec in records], np.float64).reshape(len(records), 4)
  out = {f'{prefix}PCK@{pck_threshold:g}': pck(pred, gt, bboxes, threshold=pck_threshold)}
  if schema.head_segment is not None:
    out[f'{prefix}PCKh@{pckh_threshold:g}'] = pckh(pred, gt, schema, threshold=pckh_threshold)
  return out


def rescore(results: Results, *, keypoint_threshold: float = 0.2) -> list[dict[str, Any]]:
  """Copies of ``results`` with ``score`` = box score × mean of the keypoint scores above
  ``keypoint_threshold`` (0 when none is above), as the official ``TopDownCocoDataset.evaluate``
  and mmpose's ``score_mode='bbox_keypoint'``. The incoming ``score`` is the box score."""
  out = []
  for r in results:
    scores = np.asarray(r['keypoints'], np.float64).reshape(-1, 3)[:, 2]
    above = scores[scores > keypoint_threshold]
    out.append(dict(r, score=float(r['score']) * (float(above.mean()) if above.size else 0.0)))
  return out


def _instance_area(result: Mapping[str, Any], keypoints: np.ndarray, aspect_ratio: float) -> float:
  if result.get('bbox') is not None:
    # Official: the padded, aspect-corrected input box (center/scale) — boxes[:, 4] = prod(s * 200).
    _, scale = box_to_center_scale(result['bbox'], aspect_ratio)
    return float(scale[0] * scale[1])
  # mmpose's fallback without box scales: the keypoint extent.
  (x0, y0), (x1, y1) = keypoints[:, :2].min(0), keypoints[:, :2].max(0)
  return float((x1 - x0) * (y1 - y0))


def oks_nms(results: Results, schema: Schema, *, threshold: float = 0.9,
            aspect_ratio: float = 0.75) -> list[int]:
  """Greedy OKS-NMS over one image's instances (mmpose ``oks_nms``, vis_thr None): indices kept,
  in the order kept. An instance is suppressed when its OKS with a kept one exceeds
  ``threshold``. OKS uses all K keypoints, the schema's sigmas and the mean of the two instances'
  areas: the padded input box (``box_to_center_scale(bbox, aspect_ratio)``, the official area)
  when the result has a ``bbox``, else the keypoint extent.

  Order: highest score first; equal scores last-in-input first, as mmpose's descending
  ``argsort()[::-1]`` leaves them. The order is the results' order in a results file, where
  COCOeval breaks score ties by it. A result with a non-finite score comes last, and one with a
  non-finite keypoint suppresses nothing and is suppressed by nothing (its OKS is undefined);
  the metrics then count it as not scorable.
  """
  if not results:
    return []
  kpts = _result_keypoints(results, schema)
  areas = np.array([_instance_area(r, k, aspect_ratio) for r, k in zip(results, kpts)])
  scores = _result_scores(results)
  scores = np.where(np.isfinite(scores), scores, -np.inf)
  variances = (2 * np.asarray(schema.sigmas, np.float64)) ** 2
  # A stable ascending sort reversed: ties in reverse input order on any numpy and any length.
  # mmpose's default (unstable) argsort gives that order on its short test inputs.
  order = np.argsort(scores, kind='stable')[::-1]
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(int(i))
    d2 = ((kpts[rest, :, :2] - kpts[i, :, :2]) ** 2).sum(-1)
    e = d2 / variances / ((areas[i] + areas[rest]) / 2 + np.spacing(1))[:, None] / 2
    oks = np.exp(-e).mean(-1)
    order = rest[~(oks > threshold)]  # NaN OKS: no overlap
  return keep


def nms_per_image(results: Results, schema: Schema, threshold: float = 0.9,
                  *, aspect_ratio: float = 0.75) -> list[Mapping[str, Any]]:
  """:func:`oks_nms` within each ``image_id``: the kept results, images in order of first
  appearance and each image's results in the order :func:`oks_nms` kept them (mmpose writes
  its results file so, and COCOeval breaks score ties by that order)."""
  by_image = collections.defaultdict(list)
  for i, r in enumerate(results):
    by_image[r['image_id']].append(i)
  kept = []
  for indices in by_image.values():
    group = [results[i] for i in indices]
    kept += [group[j] for j in oks_nms(group, schema, threshold=threshold,
                                       aspect_ratio=aspect_ratio)]
  return kept
