"""Metrics: COCO OKS AP against pycocotools run directly, WholeBody per part, PCK/PCKh by hand,
OKS-NMS and rescoring."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vitpose_jax import evaluation, skeletons
from vitpose_jax import synthetic

WHOLEBODY_FIELDS = {'body': 'keypoints', 'foot': 'foot_kpts', 'face': 'face_kpts',
                    'lefthand': 'lefthand_kpts', 'righthand': 'righthand_kpts'}


@pytest.fixture(scope='module')
def gt_files(tmp_path_factory):
  """Synthetic GT files by population (images are written too but never read here)."""
  root = tmp_path_factory.mktemp('gt')
  return {p: synthetic.generate(root / p, p, 'val', n, seed=3)
          for p, n in (('adult', 14), ('infant', 10), ('adult_wholebody', 16))}


def _load(path):
  with open(path) as f:
    return json.load(f)


def _perturbed_results(anns, rng, k, noise=0.04):
  """Noisy predictions from flat (K*3) GT keypoints (``noise`` × sqrt(area) pixels): some instances
  dropped, one duplicate shifted far enough to be a false positive, random instance and keypoint
  scores (all > 0)."""
  results = []
  for ann in anns:
    if rng.random() < 0.15:
      continue
    kpts = np.asarray(ann['kpts'], np.float64).reshape(k, 3).copy()
    size = np.sqrt(ann['area'])
    kpts[:, :2] += rng.normal(0, noise * size, (k, 2))
    kpts[:, 2] = rng.uniform(0.1, 1.0, k)
    results.append({'image_id': ann['image_id'], 'category_id': 1,
                    'keypoints': kpts.reshape(-1).tolist(), 'score': float(rng.uniform(0.3, 1)),
                    'bbox': list(ann['bbox'])})
  fp = copy.deepcopy(results[0])
  fp['keypoints'] = (np.asarray(fp['keypoints']).reshape(k, 3) + [40, 25, 0]).reshape(-1).tolist()
  fp['score'] = 0.95
  return results + [fp]


def _cocoeval_stats(gt_dataset, results, sigmas):
  """pycocotools on its own: the reference our plumbing must reproduce."""
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt_dataset)
    coco_gt.createIndex()
    dts = [{k: r[k] for k in ('image_id', 'category_id', 'keypoints', 'score')} for r in results]
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dts)), iouType='keypoints')
    coco_eval.params.kpt_oks_sigmas = np.array(sigmas)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return np.asarray(coco_eval.stats)


@pytest.mark.parametrize('population,schema_name',
                         [('adult', 'coco17'), ('infant', 'infant_smil25')])
def test_perfect_predictions_give_ap_1(gt_files, population, schema_name):
  schema = skeletons.get(schema_name)
  data = _load(gt_files[population])
  results = []
  for ann in data['annotations']:
    kpts = np.asarray(ann['keypoints'], np.float64).reshape(-1, 3)
    kpts[:, 2] = 1.0
    results.append({'image_id': ann['image_id'], 'category_id': 1,
                    'keypoints': kpts.reshape(-1).tolist(), 'score': 1.0})
  metrics = evaluation.coco_keypoint_metrics(gt_files[population], results, schema,
                                             prefix='t/')
  assert set(metrics) == {'t/' + n for n in evaluation.STAT_NAMES + evaluation.COUNT_NAMES}
  assert metrics['t/AP'] == 1.0 and metrics['t/AP50'] == 1.0 and metrics['t/AP75'] == 1.0
  assert metrics['t/AR'] == 1.0
  labelled = [a for a in data['annotations'] if a['num_keypoints'] > 0]
  assert metrics['t/gt_instances'] == len(labelled) > 0
  assert metrics['t/gt_area_estimated'] == metrics['t/results_non_finite'] == 0


@pytest.mark.parametrize('population,schema_name',
                         [('adult', 'coco17'), ('infant', 'infant_smil25')])
def test_coco_metrics_match_cocoeval(gt_files, population, schema_name):
  schema = skeletons.get(schema_name)
  data = _load(gt_files[population])
  anns = [dict(a, kpts=a['keypoints']) for a in data['annotations']]
  results = _perturbed_results(anns, np.random.default_rng(0), schema.num_keypoints)
  expected = _cocoeval_stats(data, results, schema.sigmas)
  got = evaluation.coco_keypoint_metrics(data, results, schema)
  assert 0.2 < got['AP'] < 0.95  # a discriminating case, neither trivial nor hopeless
  np.testing.assert_allclose([got[n] for n in evaluation.STAT_NAMES], expected, atol=1e-12)
  # COCO's own sigmas are not what a K=25 schema is scored with.
  if schema.num_keypoints != 17:
    default = _cocoeval_stats(data, results, np.full(schema.num_keypoints, 0.025))
    assert not np.allclose(default, expected)


def test_empty_results_give_zero_ap(gt_files):
  metrics = evaluation.coco_keypoint_metrics(gt_files['adult'], [], skeletons.get('coco17'))
  assert metrics['AP'] == 0.0 and metrics['AR'] == 0.0


def test_wholebody_parts_match_cocoeval_on_slices(gt_files):
  schema = skeletons.get('coco_wholebody133')
  data = _load(gt_files['adult_wholebody'])
  fields = [WHOLEBODY_FIELDS[part] for part, _, _ in schema.parts]
  anns = [dict(a, kpts=sum((a[f] for f in fields), [])) for a in data['annotations']]
  # Face and hand sigmas are small: little noise keeps their APs informative.
  results = _perturbed_results(anns, np.random.default_rng(1), schema.num_keypoints, 0.006)
  got = evaluation.wholebody_metrics(gt_files['adult_wholebody'], results, schema, prefix='wb/')

  def sliced(start, stop, gt_field=None):
    gt = copy.deepcopy(data)
    for ann, full in zip(gt['annotations'], anns):
      kpts = ann[gt_field] if gt_field else full['kpts']
      ann['keypoints'] = kpts
      ann['num_keypoints'] = int(np.count_nonzero(np.asarray(kpts[2::3]) > 0))
    dts = [dict(r, keypoints=r['keypoints'][3 * start:3 * stop]) for r in results]
    return _cocoeval_stats(gt, dts, schema.sigmas[start:stop])

  unlabelled_parts = 0
  for part, start, stop in schema.parts:
    counts = [np.count_nonzero(np.asarray(a[WHOLEBODY_FIELDS[part]][2::3]) > 0)
              for a in data['annotations']]
    unlabelled_parts += counts.count(0)
    expected = sliced(start, stop, WHOLEBODY_FIELDS[part])
    assert got[f'wb/AP_{part}'] == pytest.approx(expected[0], abs=1e-12), part
    assert got[f'wb/AR_{part}'] == pytest.approx(expected[5], abs=1e-12), part
  # The data must exercise the ignore rule: some instance has a part with no labelled point.
  assert unlabelled_parts > 0
  whole = sliced(0, schema.num_keypoints)
  np.testing.assert_allclose([got['wb/' + n] for n in evaluation.STAT_NAMES], whole, atol=1e-12)
  assert len({got[f'wb/AP_{p}'] for p, _, _ in schema.parts}) > 1


# PCK by hand. Instance 0: bbox 100 x 50 → norm 100; instance 1: bbox 40 x 80 → norm 80.
#   joint 0: d = 15/100 = 0.15 hit; d = 15/80 = 0.1875 hit (GT v=1 counts)   → 2/2
#   joint 1: d = 25/100 = 0.25 miss; d = 10/80 = 0.125 hit                  → 1/2
#   joint 2: unlabelled in instance 0; d = 16/80 = 0.2, not < 0.2, miss     → 0/1
# mmpose averages per joint: (1 + 0.5 + 0) / 3 = 0.5 (pooled would be 3/5).
PCK_GT = np.array([[[10, 10, 2], [20, 20, 2], [30, 30, 0]],
                   [[0, 0, 1], [10, 10, 2], [50, 50, 2]]], np.float64)
PCK_PRED = np.array([[[10, 25], [20, 45], [99, 99]],
                     [[12, 9], [10, 20], [50, 66]]], np.float64)
PCK_BOXES = np.array([[5, 5, 100, 50], [0, 0, 40, 80]], np.float64)


def test_pck_by_hand():
  assert evaluation.pck(PCK_PRED, PCK_GT, PCK_BOXES, threshold=0.2) == pytest.approx(0.5)
  # At 0.3 all five counted joints (0.15, 0.1875, 0.25, 0.125, 0.2) are hits.
  assert evaluation.pck(PCK_PRED, PCK_GT, PCK_BOXES, threshold=0.3) == pytest.approx(1.0)


def _infant_case():
  """PCKh by hand on infant_smil25 (head segment head-neck).

  Instance 0: head (100, 100), neck (100, 120) → 20. head exact (0, hit), neck 12 off (0.6,
  miss), left wrist 8 off (0.4, hit). Instance 1: head (0, 0), neck (0, 40) → 40. head 30 off
  (0.75, miss), neck exact (hit), left wrist 19 off (0.475, hit). Instance 2: neck unlabelled, so
  excluded although every prediction is far off. Per joint: 1/2, 1/2, 2/2 → mean 2/3.
  """
  s = skeletons.get('infant_smil25')
  head, neck, wrist = s.index('head'), s.index('neck'), s.index('left_wrist')
  gt = np.zeros((3, s.num_keypoints, 3))
  pred = np.zeros((3, s.num_keypoints, 2))
  gt[0, [head, neck, wrist]] = [[100, 100, 2], [100, 120, 2], [80, 150, 2]]
  pred[0, [head, neck, wrist]] = [[100, 100], [112, 120], [80, 158]]
  gt[1, [head, neck, wrist]] = [[0, 0, 2], [0, 40, 1], [30, 60, 2]]
  pred[1, [head, neck, wrist]] = [[30, 0], [0, 40], [30, 41]]
  gt[2, [head, wrist]] = [[50, 50, 2], [70, 90, 2]]
  pred[2, [head, wrist]] = [[500, 500], [700, 900]]
  return s, pred, gt


def test_pckh_by_hand():
  s, pred, gt = _infant_case()
  assert evaluation.pckh(pred, gt, s, threshold=0.5) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match='head segment'):
    evaluation.pckh(PCK_PRED, PCK_GT, skeletons.get('coco17'))


def test_pck_metrics_pairs_results_with_records():
  s, pred, gt = _infant_case()
  boxes = np.array([[0, 0, 200, 200], [0, 0, 100, 100], [0, 0, 50, 50]], np.float64)
  records = [{'instance_id': 10 + i, 'bbox': boxes[i], 'keypoints': gt[i, :, :2],
              'keypoints_visible': gt[i, :, 2]} for i in range(3)]
  results = [{'image_id': 1, 'category_id': 1, 'instance_id': 10 + i, 'score': 1.0,
              'keypoints': np.concatenate([pred[i], np.ones((s.num_keypoints, 1))], 1)
              .reshape(-1).tolist()} for i in (2, 0, 1)]
  metrics = evaluation.pck_metrics(records, results, s, prefix='infant/')
  assert metrics == {
      'infant/PCK@0.2': pytest.approx(evaluation.pck(pred, gt, boxes, threshold=0.2)),
      'infant/PCKh@0.5': pytest.approx(2 / 3)}
  coco = skeletons.get('coco17')
  coco_results = [{'instance_id': i, 'keypoints': np.concatenate(
      [PCK_PRED[i], np.ones((3, 1))], 1).tolist() + [[0, 0, 0]] * 14} for i in range(2)]
  coco_records = [{'instance_id': i, 'bbox': PCK_BOXES[i],
                   'keypoints': np.concatenate([PCK_GT[i, :, :2], np.zeros((14, 2))]),
                   'keypoints_visible': np.concatenate([PCK_GT[i, :, 2], np.zeros(14)])}
                  for i in range(2)]
  assert evaluation.pck_metrics(coco_records, coco_results, coco) == {'PCK@0.2': 0.5}
  with pytest.raises(ValueError, match='no result'):
    evaluation.pck_metrics(records, results[:2], s)


def _person(offset, score, image_id=1):
  rng = np.random.default_rng(0)
  kpts = np.concatenate([rng.uniform(0, 80, (17, 2)) + offset, rng.uniform(0.5, 1, (17, 1))], 1)
  return {'image_id': image_id, 'category_id': 1, 'keypoints': kpts.reshape(-1).tolist(),
          'score': score, 'bbox': [offset[0], offset[1], 80.0, 80.0]}


def test_oks_nms_removes_duplicate_and_keeps_distinct_person():
  coco = skeletons.get('coco17')
  a = _person((10, 10), 0.9)
  duplicate = _person((11.5, 9), 0.8)  # the same person, boxes 1-2 px apart
  other = _person((200, 40), 0.7)
  weaker_first = [other, duplicate, a]
  assert evaluation.oks_nms(weaker_first, coco) == [2, 0]
  # Without boxes the keypoint extent is the area; the duplicate still goes.
  no_box = [{k: v for k, v in r.items() if k != 'bbox'} for r in weaker_first]
  assert evaluation.oks_nms(no_box, coco) == [2, 0]
  # At threshold 1 nothing is suppressed; NMS never crosses images.
  assert sorted(evaluation.oks_nms(weaker_first, coco, threshold=1.0)) == [0, 1, 2]
  on_image_2 = dict(duplicate, image_id=2)
  kept = evaluation.nms_per_image([a, duplicate, other, on_image_2], coco, 0.9)
  assert kept == [a, other, on_image_2]
  assert evaluation.oks_nms([], coco) == []


def test_rescore_by_hand():
  # Keypoint scores 0.1, 0.5, 0.9, 0.2 at threshold 0.2: 0.5 and 0.9 count (0.2 is not above),
  # mean 0.7, times box score 0.8 → 0.56. None above the threshold → 0.
  r = {'image_id': 1, 'keypoints': [0, 0, 0.1, 1, 1, 0.5, 2, 2, 0.9, 3, 3, 0.2], 'score': 0.8}
  low = dict(r, keypoints=[0, 0, 0.1, 1, 1, 0.2, 2, 2, 0.05, 3, 3, 0.0])
  out = evaluation.rescore([r, low], keypoint_threshold=0.2)
  assert out[0]['score'] == pytest.approx(0.56) and out[1]['score'] == 0.0
  assert r['score'] == 0.8 and out[0]['keypoints'] == r['keypoints']
