"""Pose metrics: COCO OKS AP/AR for any schema, WholeBody per part, PCK/PCKh, OKS-NMS, rescoring.

Predictions are COCO results: a list of ``{'image_id', 'category_id', 'keypoints': flat K*3
[x, y, score], 'score', 'bbox' (optional, [x, y, w, h] of the input box), 'instance_id'
(optional, the GT annotation id when GT boxes were used)}`` with all K keypoints of the schema in
schema order. Ground truth is a COCO-format file or dict in any layout
:func:`vitpose_jax.data.coco.annotation_keypoints` reads (COCO-WholeBody split fields included).
Only its categories holding the schema's keypoints are scored
(:func:`vitpose_jax.data.coco.keypoint_categories`); a result's ``category_id`` must be one of
them, exactly as the file writes it (``2``, ``"1"``), or absent when there is only one: any other
is a ValueError naming the result, not a silent miss.
Coordinates are pixels, x right, y down.

Semantics follow mmpose (``mmpose/evaluation``) and the official ViTPose evaluation
(``TopDownCocoDataset.evaluate``): ``CocoMetric``/``CocoWholeBodyMetric`` for AP, their OKS-NMS
and ``bbox_keypoint`` rescoring, ``keypoint_pck_accuracy`` for PCK and PCKh.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vitpose_jax.data.coco import (
    WHOLEBODY_FIELDS,
    KeypointCategories,
    annotation_keypoints,
    box_to_center_scale,
    keypoint_categories,
)
from vitpose_jax.skeletons import Skeleton

# COCOeval.stats[0..9] for iouType 'keypoints'.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl')
# A COCO-format annotation file's path or its loaded dict; a list of COCO keypoint results.
GroundTruth = str | os.PathLike[str] | Mapping[str, Any]
Results = Sequence[Mapping[str, Any]]
# A GT without 'area' gets 0.53 x its box area, xtcocotools' stand-in (its use_area=False path,
# which mmpose uses for datasets without segmentations).
_BOX_TO_AREA = 0.53


@dataclasses.dataclass
class _GroundTruth:
  """GT assembled in schema order: ``annotations`` hold every field COCOeval reads except the
  keypoints, which live in ``keypoints`` float64 (G, K, 3) [x, y, v] so parts slice them. Only
  the schema's keypoint categories (``keypoint_categories``) are kept."""

  images: list[dict[str, Any]]
  categories: list[dict[str, Any]]
  annotations: list[dict[str, Any]]
  keypoints: np.ndarray
  keypoint_categories: KeypointCategories


def _ground_truth(gt: GroundTruth, skeleton: Skeleton) -> _GroundTruth:
  if isinstance(gt, Mapping):
    data, source = gt, 'ground truth'
  else:
    source = os.fspath(gt)
    with open(source) as f:
      data = json.load(f)
  categories = keypoint_categories(data, skeleton, source)
  k = skeleton.num_keypoints
  annotations, keypoints = [], []
  for ann in data['annotations']:
    category = categories.of(ann)
    if category is None:
      continue  # another category's objects: the schema's keypoints are not theirs to score
    ann_id = ann.get('id')
    iscrowd = int(ann.get('iscrowd', 0))
    if iscrowd and not any(f in ann for f in WHOLEBODY_FIELDS.values()):
      # COCO crowd regions carry no keypoints; COCOeval only needs their box.
      kpts = np.zeros((k, 3))
    else:
      try:
        kpts = annotation_keypoints(ann, skeleton, category.keypoint_names)
      except ValueError as e:
        raise ValueError(f'{source}: annotation {ann_id}: {e}') from None
    bbox = [float(v) for v in np.asarray(ann.get('bbox', []), np.float64).reshape(-1)]
    if len(bbox) != 4:
      raise ValueError(f'{source}: annotation {ann_id}: bbox {ann.get("bbox")!r} is not '
                       '[x, y, w, h]')
    area = ann.get('area')
    annotations.append({
        'id': ann_id, 'image_id': ann['image_id'], 'category_id': category.id,
        'iscrowd': iscrowd, 'bbox': bbox,
        'area': float(area) if area is not None else _BOX_TO_AREA * bbox[2] * bbox[3],
    })
    keypoints.append(np.asarray(kpts, np.float64))
  images = [{'id': img['id']} for img in data['images']]
  return _GroundTruth(images, [{'id': c.id, 'name': c.name} for c in categories.categories],
                      annotations, np.asarray(keypoints, np.float64).reshape(-1, k, 3),
                      categories)


def _result_keypoints(results: Results, skeleton: Skeleton,
                      image_ids: set | None = None) -> np.ndarray:
  """The results' keypoints as float64 (N, K, 3) [x, y, score]; ValueError on a bad result."""
  k = skeleton.num_keypoints
  out = np.zeros((len(results), k, 3))
  for i, r in enumerate(results):
    values = np.asarray(r['keypoints'], np.float64).reshape(-1)
    if values.size != 3 * k:
      raise ValueError(f'result {i} (image {r.get("image_id")}) holds {values.size} keypoint '
                       f'values, expected {3 * k} for schema {skeleton.name}')
    if image_ids is not None and r['image_id'] not in image_ids:
      raise ValueError(f'result {i}: image_id {r["image_id"]!r} is not in the ground truth')
    out[i] = values.reshape(k, 3)
  return out


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
  coco = COCO()
  coco.dataset = {'images': images, 'categories': categories, 'annotations': annotations}
  coco.createIndex()
  return coco


def _oks_stats(gt: _GroundTruth, results: Results, dt_keypoints: np.ndarray,
               part: slice, sigmas: Sequence[float]) -> np.ndarray:
  """COCOeval(iouType='keypoints').stats (10,) on the ``part`` slice of GT and predictions."""
  gt_anns = []
  for ann, kpts in zip(gt.annotations, gt.keypoints[:, part]):
    # COCOeval ignores a GT whose num_keypoints is 0, so an instance whose part is unlabelled
    # drops out of that part's evaluation (xtcocotools' per-part count, as mmpose's metric).
    gt_anns.append(dict(ann, keypoints=kpts.reshape(-1).tolist(),
                        num_keypoints=int((kpts[:, 2] > 0).sum())))
  dt_anns = []
  for r, kpts in zip(results, dt_keypoints[:, part]):
    if not (kpts[:, 2] > 0).any():
      # xtcocotools, which mmpose and the official ViTPose evaluate with, drops a prediction
      # whose scores in the evaluated slice are all <= 0; pycocotools alone would keep it.
      continue
    (x0, y0), (x1, y1) = kpts[:, :2].min(0), kpts[:, :2].max(0)
    # Area and box from the keypoint extent, as pycocotools' loadRes sets them for keypoint
    # results (a result's own 'bbox' would send loadRes down its box branch instead).
    dt_anns.append({'id': len(dt_anns) + 1, 'image_id': r['image_id'],
                    'category_id': r['category_id'], 'keypoints': kpts.reshape(-1).tolist(),
                    'score': float(r['score']), 'area': float((x1 - x0) * (y1 - y0)),
                    'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
  # pycocotools reports progress on stdout; metrics are returned, not printed.
  with contextlib.redirect_stdout(io.StringIO()):
    coco_eval = COCOeval(_coco(gt.images, gt.categories, gt_anns),
                         _coco(gt.images, gt.categories, dt_anns), iouType='keypoints')
    coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return np.asarray(coco_eval.stats, np.float64)


def _with_category(results: Results, categories: KeypointCategories) -> list[Mapping[str, Any]]:
  """The results, each with the keypoint category it belongs to; ValueError for one of another
  category, which COCOeval would silently score as a miss of every ground truth."""
  out = []
  for i, r in enumerate(results):
    category = categories.of(r)
    if category is None:
      raise ValueError(f'result {i} (image {r.get("image_id")!r}): {categories.refusal(r)} of '
                       f'{categories.source}, whose keypoints are scored')
    out.append(dict(r, category_id=category.id))
  return out


def _prepare(gt, results, skeleton) -> tuple[_GroundTruth, list, np.ndarray]:
  truth = _ground_truth(gt, skeleton)
  results = _with_category(results, truth.keypoint_categories)
  dt_keypoints = _result_keypoints(results, skeleton, {img['id'] for img in truth.images})
  return truth, results, dt_keypoints


def coco_keypoint_metrics(gt: GroundTruth, results: Results, skeleton: Skeleton, *,
                          prefix: str = '') -> dict[str, float]:
  """COCO OKS AP/AR of ``results`` against ``gt`` with the schema's sigmas, any K.

  Returns ``{prefix + name: value}`` for ``STAT_NAMES`` (AP, AP50, AP75, APm, APl, AR, AR50,
  AR75, ARm, ARl; COCOeval.stats[0..9], maxDets 20). No results give AP 0; -1 means the GT holds
  no instance with a labelled keypoint in that area range (COCOeval's convention). As xtcocotools
  (mmpose's evaluator), a result whose keypoint scores are all <= 0 is not scored.
  """
  truth, results, dt_keypoints = _prepare(gt, results, skeleton)
  stats = _oks_stats(truth, results, dt_keypoints, slice(None), skeleton.sigmas)
  return {prefix + name: float(v) for name, v in zip(STAT_NAMES, stats)}


def wholebody_metrics(gt: GroundTruth, results: Results, skeleton: Skeleton, *,
                      prefix: str = '') -> dict[str, float]:
  """Per-part and whole-body COCO OKS AP/AR, as mmpose's ``CocoWholeBodyMetric``.

  Each part of ``skeleton.parts`` is evaluated on its slice of GT and predicted keypoints with its
  slice of sigmas; GT instances with no labelled point in the part are ignored for that part.
  Returns ``AP_<part>`` and ``AR_<part>`` for every part plus the whole-body ``STAT_NAMES`` (AP,
  AP50, …), all prefixed.
  """
  if not skeleton.parts:
    raise ValueError(f'schema {skeleton.name} has no parts; use coco_keypoint_metrics')
  truth, results, dt_keypoints = _prepare(gt, results, skeleton)
  out = {}
  for part, start, stop in skeleton.parts:
    stats = _oks_stats(truth, results, dt_keypoints, slice(start, stop),
                       skeleton.sigmas[start:stop])
    out[f'{prefix}AP_{part}'] = float(stats[0])
    out[f'{prefix}AR_{part}'] = float(stats[5])
  stats = _oks_stats(truth, results, dt_keypoints, slice(None), skeleton.sigmas)
  out.update({prefix + name: float(v) for name, v in zip(STAT_NAMES, stats)})
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


def pckh(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton, *, threshold: float = 0.5) -> float:
  """PCKh: PCK normalised by each instance's GT head segment (``skeleton.head_segment``) length.

  pred (N, K, 2), gt (N, K, 3) [x, y, v]. Instances whose head segment has an unlabelled end (or
  zero length) are excluded, as mmpose excludes a zero normaliser.
  """
  if skeleton.head_segment is None:
    raise ValueError(f'schema {skeleton.name} has no head segment, so PCKh is undefined')
  pred, gt = _check_pred_gt(pred, gt)
  a, b = (skeleton.index(n) for n in skeleton.head_segment)
  labelled = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0)
  head = np.where(labelled, np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1), 0.0)
  return _pck_accuracy(pred, gt, head, threshold)


def pck_metrics(records: Sequence[Mapping[str, Any]], results: Results,
                skeleton: Skeleton, *, prefix: str = '', pck_threshold: float = 0.2,
                pckh_threshold: float = 0.5) -> dict[str, float]:
  """``PCK@0.2`` and, where the schema has a head segment, ``PCKh@0.5`` (prefixed).

  ``records``: GT instance records (``vitpose_jax.data.coco.read_coco``: ``instance_id``, ``bbox``
  [x, y, w, h], ``keypoints`` (K, 3)). ``results``: predictions on GT boxes, each carrying the
  ``instance_id`` of its record; every record needs exactly one.
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
  pred = _result_keypoints(matched, skeleton)[..., :2]
  k = skeleton.num_keypoints
  gt = np.asarray([rec['keypoints'] for rec in records], np.float64).reshape(len(records), k, 3)
  bboxes = np.asarray([rec['bbox'] for rec in records], np.float64).reshape(len(records), 4)
  out = {f'{prefix}PCK@{pck_threshold:g}': pck(pred, gt, bboxes, threshold=pck_threshold)}
  if skeleton.head_segment is not None:
    out[f'{prefix}PCKh@{pckh_threshold:g}'] = pckh(pred, gt, skeleton, threshold=pckh_threshold)
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


def oks_nms(results: Results, skeleton: Skeleton, *, threshold: float = 0.9,
            aspect_ratio: float = 0.75) -> list[int]:
  """Greedy OKS-NMS over one image's instances (mmpose ``oks_nms``, vis_thr None): indices kept,
  highest score first. An instance is suppressed when its OKS with a kept one exceeds
  ``threshold``. OKS uses all K keypoints, the schema's sigmas and the mean of the two instances'
  areas: the padded input box (``box_to_center_scale(bbox, aspect_ratio)``, the official area)
  when the result has a ``bbox``, else the keypoint extent."""
  if not results:
    return []
  kpts = _result_keypoints(results, skeleton)
  areas = np.array([_instance_area(r, k, aspect_ratio) for r, k in zip(results, kpts)])
  scores = np.array([float(r['score']) for r in results])
  variances = (2 * np.asarray(skeleton.sigmas, np.float64)) ** 2
  order = scores.argsort()[::-1]
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(int(i))
    d2 = ((kpts[rest, :, :2] - kpts[i, :, :2]) ** 2).sum(-1)
    e = d2 / variances / ((areas[i] + areas[rest]) / 2 + np.spacing(1))[:, None] / 2
    oks = np.exp(-e).mean(-1)
    order = rest[oks <= threshold]
  return keep


def nms_per_image(results: Results, skeleton: Skeleton, threshold: float = 0.9,
                  *, aspect_ratio: float = 0.75) -> list[Mapping[str, Any]]:
  """:func:`oks_nms` within each ``image_id``; the kept results in their input order."""
  by_image = collections.defaultdict(list)
  for i, r in enumerate(results):
    by_image[r['image_id']].append(i)
  kept = []
  for indices in by_image.values():
    group = [results[i] for i in indices]
    kept += [indices[j] for j in oks_nms(group, skeleton, threshold=threshold,
                                         aspect_ratio=aspect_ratio)]
  return [results[i] for i in sorted(kept)]
