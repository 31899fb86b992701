"""Issue 17, kinds 1 and 6, on small files each test writes itself.

Ids: any JSON scalar works everywhere (prepare, training's packed records, results files, run
evaluation) and never changes a score; a repeated id is a one-line error naming it and the file.
Both with the keypoint category of issue 17's kind 2: a person category with id 2 next to another
category, string image ids and annotation id 0 score exactly as the canonical file.
Metrics: non-finite results, unusable ground-truth areas, tasks without ground truth in mean/AP,
instances the loader skipped, bad detections, WholeBody sizing and OKS-NMS tie order.
"""

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vitpose_jax import evaluate, evaluation, skeletons
from vitpose_jax.data import coco, packing, prepare
from vitpose_jax.data.coco import DataError
from vitpose_jax.evaluation import evaluators

COCO17 = skeletons.get('coco17')


# --- The canonical file: integer ids from 1, category 1, three images of two people each. ---

def _canonical():
  images, annotations = [], []
  for i in range(3):
    images.append({'id': i + 1, 'file_name': f'im{i}.png', 'width': 320, 'height': 240})
    for j in range(2):
      # Each person's box (and so its crop centre) is distinct across images too.
      x, y, w, h = 10 + 150 * j + 7 * i, 15 + 3 * i, 120, 200
      rng = np.random.default_rng(len(annotations))
      kpts = np.zeros((17, 3))
      kpts[:, 0] = rng.uniform(x + 5, x + w - 5, 17)
      kpts[:, 1] = rng.uniform(y + 5, y + h - 5, 17)
      kpts[:, 2] = 2
      annotations.append({'id': len(annotations) + 1, 'image_id': i + 1, 'category_id': 1,
                          'iscrowd': 0, 'bbox': [x, y, w, h], 'area': 0.6 * w * h,
                          'keypoints': kpts.round(1).reshape(-1).tolist(), 'num_keypoints': 17})
  return {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person'}]}


# Each variant renames the canonical ids: (image id, annotation id) from the canonical ones.
ID_VARIANTS = {
    'canonical': (lambda i: i, lambda a: a),
    'annotation id 0': (lambda i: i, lambda a: a - 1),
    'ids from 0': (lambda i: i - 1, lambda a: a - 1),
    'negative ids': (lambda i: -i, lambda a: -a),
    'ids beyond 2**53': (lambda i: 2**62 + 7 * i, lambda a: 2**60 + 3 * a),
    'string image ids': (lambda i: f'frame_{i:04d}', lambda a: a),
    'string annotation ids': (lambda i: i, lambda a: f'person-{a}'),
    'ids out of file order': (lambda i: (0, 30, 20, 10)[i], lambda a: 100 - a),
    'mixed int and str ids': (lambda i: i if i % 2 else str(i), lambda a: str(a) if a % 2 else a),
}


def _variant(name):
  image_id, ann_id = ID_VARIANTS[name]
  data = _canonical()
  for img in data['images']:
    img['id'] = image_id(img['id'])
  for ann in data['annotations']:
    ann['id'], ann['image_id'] = ann_id(ann['id']), image_id(ann['image_id'])
  return data


def _write(tmp_path, data, name='gt.json'):
  """The file and its image folder (one grey level per image, so the images differ)."""
  images = tmp_path / 'images'
  images.mkdir(exist_ok=True)
  for n, img in enumerate(data['images']):
    path = images / img['file_name']
    if not path.exists():
      Image.fromarray(np.full((img['height'], img['width'], 3), 40 * n, np.uint8)).save(path)
  path = tmp_path / name
  path.write_text(json.dumps(data))
  return str(path), str(images)


def _predicted(data, perturb):
  """(K, 3) [x, y, score] per annotation: exact, or shifted by a noise that grows along the
  file with instance scores from three values (so scores tie between images)."""
  out = []
  for n, ann in enumerate(data['annotations']):
    kpts = np.asarray(ann['keypoints'], np.float64).reshape(17, 3).copy()
    kpts[:, 2] = 1.0
    if perturb:
      kpts[:, :2] += np.random.default_rng(100 + n).normal(0, 1.5 + 2.5 * n, (17, 2))
      kpts[:, 2] = (0.5, 0.7, 0.9)[n % 3]
    out.append(kpts)
  return out


def _results(data, perturb):
  return [{'image_id': ann['image_id'], 'category_id': 1, 'score': 1.0,
           'keypoints': kpts.reshape(-1).tolist()}
          for ann, kpts in zip(data['annotations'], _predicted(data, perturb))]


def _score_file(tmp_path, gt_path, results, capsys):
  """``python -m vitpose_jax.evaluate --gt --results --schema coco17``: (exit status, JSON or
  the error line)."""
  path = tmp_path / 'dt.json'
  path.write_text(json.dumps(results))
  status = evaluate.main(['--gt', gt_path, '--results', str(path), '--schema', 'coco17'])
  out, err = capsys.readouterr()
  return status, (json.loads(out) if status == 0 else err.strip())


class _FakePredictor:
  """Predictor-like: answers each crop with chosen image keypoints of the person whose box is
  nearest the crop's centre, so everything around the network is the product's own."""

  def __init__(self, schema, centers, keypoints):
    self.config = SimpleNamespace(image_size=(256, 192),
                                  task=lambda name: SimpleNamespace(schema=schema))
    self.centers, self.answers = np.asarray(centers), keypoints

  def keypoints(self, task, pixels, center, scale, rotation=None):
    nearest = [np.linalg.norm(self.centers - c, axis=1).argmin() for c in center]
    return np.stack([self.answers[n] for n in nearest])


def _fake(data, perturb):
  centers = [coco.box_to_center_scale(ann['bbox'])[0] for ann in data['annotations']]
  return _FakePredictor(COCO17, centers, _predicted(data, perturb))


def _run(gt_path, images, predictor, **options):
  return evaluators.KeypointEvaluator(
      task='coco', data=dict(source='coco', annotations=gt_path, images=images),
      **options).run(predictor)


# --- Kind 1: ids. ---

@pytest.mark.parametrize('variant', list(ID_VARIANTS))
def test_perfect_results_score_ap_1_for_every_id_variant(variant, tmp_path, capsys):
  data = _variant(variant)
  gt_path, images = _write(tmp_path, data)
  status, metrics = _score_file(tmp_path, gt_path, _results(data, perturb=False), capsys)
  assert status == 0, metrics
  assert metrics['AP'] == 1.0 and metrics['AR'] == 1.0 and metrics['gt_instances'] == 6
  out = tmp_path / 'pred.json'
  got = _run(gt_path, images, _fake(data, perturb=False), results_out=str(out))
  assert got['coco/AP'] == 1.0 and got['coco/PCK@0.2'] == 1.0
  assert got['coco/gt_missed_by_loader'] == 0
  # The results file names images and annotations by the file's own ids.
  written = json.loads(out.read_text())
  assert [(r['image_id'], r['instance_id']) for r in written] == [
      (a['image_id'], a['id']) for a in data['annotations']]


def test_a_perturbation_scores_the_same_on_every_id_variant(tmp_path, capsys):
  scores = {}
  for variant in ID_VARIANTS:
    data = _variant(variant)
    folder = tmp_path / variant.replace(' ', '_').replace('*', '')
    folder.mkdir()
    gt_path, images = _write(folder, data)
    status, by_file = _score_file(folder, gt_path, _results(data, perturb=True), capsys)
    assert status == 0, by_file
    by_run = _run(gt_path, images, _fake(data, perturb=True))
    scores[variant] = ([by_file[n] for n in evaluation.STAT_NAMES],
                       [by_run[f'coco/{n}'] for n in evaluation.STAT_NAMES + ('PCK@0.2',)])
  canonical = scores.pop('canonical')
  assert 0.1 < canonical[0][0] < 0.9 and 0.1 < canonical[1][0] < 0.9
  for variant, got in scores.items():
    assert got == canonical, variant



# --- Kinds 1 and 2 together: ids and the keypoint category. ---

def _person_category_2():
  """The canonical people with string image ids, annotation ids from 0 and the person category
  listed second with id 2, after a category 1 ('ball') whose one annotation, between the
  people, carries no keypoints: our category numbering would call the person 1, so ids must not
  leak across the mapping either way. Returns (the file, the people alone)."""
  data = _variant('string image ids')
  for ann in data['annotations']:
    ann['id'] -= 1
    ann['category_id'] = 2
  people = copy.deepcopy(data)
  data['annotations'].insert(2, {'id': 6, 'image_id': 'frame_0002', 'category_id': 1,
                                 'iscrowd': 0, 'bbox': [280, 180, 20, 20], 'area': 300.0})
  data['categories'] = [{'id': 1, 'name': 'ball'},
                        {'id': 2, 'name': 'person', 'keypoints': list(COCO17.keypoints)}]
  return data, people


def _category_2_results(people, perturb):
  return [dict(r, category_id=2) for r in _results(people, perturb)]


def test_category_2_string_image_ids_and_annotation_id_0_score_ap_1(tmp_path, capsys):
  data, people = _person_category_2()
  gt_path, images = _write(tmp_path, data)
  status, metrics = _score_file(tmp_path, gt_path, _category_2_results(people, False), capsys)
  assert status == 0, metrics
  assert metrics['AP'] == 1.0 and metrics['AR'] == 1.0 and metrics['gt_instances'] == 6
  out = tmp_path / 'pred.json'
  got = _run(gt_path, images, _fake(people, perturb=False), results_out=str(out))
  assert got['coco/AP'] == 1.0 and got['coco/PCK@0.2'] == 1.0
  # The ball is another category's object, counted by the loader but no person it missed.
  assert got['coco/gt_missed_by_loader'] == 0 and 'other category' in got['coco/skipped']
  # Results carry the file's own image ids, annotation ids and person category.
  written = json.loads(out.read_text())
  assert [(r['image_id'], r['instance_id'], r['category_id']) for r in written] == [
      (a['image_id'], a['id'], 2) for a in people['annotations']]
  # On detector boxes: the person detections, under string image ids, are all the ball's is not.
  dets = [{'image_id': a['image_id'], 'category_id': 2, 'bbox': a['bbox'], 'score': 0.9}
          for a in people['annotations']]
  dets.insert(1, {'image_id': 'frame_0002', 'category_id': 1, 'bbox': [280, 180, 20, 20],
                  'score': 0.95})
  dets_path = tmp_path / 'dets.json'
  dets_path.write_text(json.dumps(dets))
  got = _run(gt_path, images, _fake(people, perturb=False), detections=str(dets_path),
             results_out=str(out))
  assert got['coco/AP'] == 1.0 and got['coco/detections_skipped'] == 1
  assert "detection 1: category_id 1 is not category 2 ('person')" in got['coco/skipped']
  assert {(r['image_id'], r['category_id']) for r in json.loads(out.read_text())} == {
      (a['image_id'], 2) for a in people['annotations']}


def test_category_2_string_image_ids_and_annotation_id_0_score_as_the_canonical_file(tmp_path,
                                                                                    capsys):
  scores = []
  for name in ('canonical', 'category 2'):
    data, people = ((_canonical(),) * 2 if name == 'canonical' else _person_category_2())
    folder = tmp_path / name.replace(' ', '_')
    folder.mkdir()
    gt_path, images = _write(folder, data)
    results = (_results(people, perturb=True) if name == 'canonical'
               else _category_2_results(people, perturb=True))
    status, by_file = _score_file(folder, gt_path, results, capsys)
    assert status == 0, by_file
    by_run = _run(gt_path, images, _fake(people, perturb=True))
    scores.append(([by_file[n] for n in evaluation.STAT_NAMES + evaluation.COUNT_NAMES],
                   [by_run[f'coco/{n}'] for n in evaluation.STAT_NAMES + ('PCK@0.2',)]))
  canonical, variant = scores
  assert 0.1 < canonical[0][0] < 0.9 and 0.1 < canonical[1][0] < 0.9
  assert variant == canonical

def test_reading_and_packing_keep_string_ids_and_store_positions(tmp_path):
  data = _variant('mixed int and str ids')
  gt_path, images = _write(tmp_path, data)
  records, _ = coco.read_coco(gt_path, images, COCO17)
  assert [(r['image_id'], r['instance_id'], r['image_index'], r['annotation_index'])
          for r in records] == [(a['image_id'], a['id'], i // 2, i)
                                for i, a in enumerate(data['annotations'])]
  packed, report = packing.pack_coco(gt_path, images, COCO17, str(tmp_path / 'packed'))
  source = packed.source('train')
  assert report.kept == len(source) == 6
  stored = sorted((int(source[i]['annotation_index']), int(source[i]['image_index']))
                  for i in range(len(source)))
  assert stored == [(i, i // 2) for i in range(6)]
  # Each record's pixels are its own image's (the grey level of image i is 40 i).
  for i in range(len(source)):
    assert (np.asarray(source[i]['image']) == 40 * int(source[i]['image_index'])).all()


@pytest.mark.parametrize('kind, repeated', [('annotation', 2), ('annotation', 'person-2'),
                                            ('image', 2), ('image', 'frame_0002')])
def test_a_repeated_id_is_a_one_line_error_naming_it_and_the_file(kind, repeated, tmp_path,
                                                                  capsys):
  data = _variant('string image ids' if repeated == 'frame_0002' else
                  'string annotation ids' if repeated == 'person-2' else 'canonical')
  if kind == 'annotation':
    data['annotations'][2]['id'] = data['annotations'][1]['id']
  else:  # two files merged without renumbering: image 3 repeats image 2's id
    data['images'][2]['id'] = data['images'][1]['id']
    for ann in data['annotations'][4:]:
      ann['image_id'] = data['images'][1]['id']
  gt_path, images = _write(tmp_path, data)
  message = f'{gt_path}: {kind} id {repeated!r} appears twice'

  def check(text):
    assert message in text and '\n' not in text.strip(), text

  for strict in (False, True):  # prepare and training read the file so
    with pytest.raises(DataError) as e:
      coco.read_coco(gt_path, images, COCO17, strict=strict)
    check(str(e.value))
  assert prepare.main(['--annotations', gt_path, '--images', images, '--schema', 'coco17',
                       '--out', str(tmp_path / 'packed')]) == 2
  check(capsys.readouterr().err)
  status, err = _score_file(tmp_path, gt_path, _results(data, perturb=False), capsys)
  assert status == 2
  check(err)
  with pytest.raises(DataError) as e:
    _run(gt_path, images, _fake(data, perturb=False))
  check(str(e.value))


def test_a_result_naming_an_image_the_ground_truth_lacks_is_an_error(tmp_path, capsys):
  data = _variant('string image ids')
  gt_path, _ = _write(tmp_path, data)
  results = _results(data, perturb=False)
  results[3]['image_id'] = 'frame_9'
  status, err = _score_file(tmp_path, gt_path, results, capsys)
  assert (status, err) == (
      2, f"error: {tmp_path / 'dt.json'}: result 3: image_id 'frame_9' is not in the ground truth")
  # An id of the right value but the wrong type is named as such.
  gt_path, _ = _write(tmp_path, _canonical(), 'int_ids.json')
  results = _results(_canonical(), perturb=False)
  results[0]['image_id'] = '1'
  status, err = _score_file(tmp_path, gt_path, results, capsys)
  assert status == 2 and "image_id '1' is not in the ground truth (it has 1: " in err
  results[0].update(image_id=1, score='high')
  status, err = _score_file(tmp_path, gt_path, results, capsys)
  assert err == f"error: {tmp_path / 'dt.json'}: result 0 (image 1): score 'high' is not a number"


# --- Kind 6: metrics. ---

def _one_person():
  data = _canonical()
  return dict(data, images=data['images'][:1], annotations=data['annotations'][:1])


@pytest.mark.parametrize('value, where', [
    (math.nan, (3, 0)), (math.nan, (5, 1)), (math.inf, (0, 0)), (math.nan, (7, 2)),
    (-math.inf, 'score')])
def test_a_non_finite_result_is_a_counted_miss(value, where):
  data = _one_person()
  (result,) = _results(data, perturb=False)
  kpts = np.asarray(result['keypoints']).reshape(17, 3)
  kpts[:, 0] += 150  # 150 px off: a miss however the NaN is read
  if where == 'score':
    result['score'] = value
  else:
    kpts[where] = value
  result['keypoints'] = kpts.reshape(-1).tolist()
  metrics = evaluation.coco_keypoint_metrics(data, [result], COCO17)
  assert metrics['AP'] == 0.0 and metrics['results_non_finite'] == 1  # pycocotools: AP 1.0
  # Next to good results it is as if it were not there, but counted.
  data = _canonical()
  good = _results(data, perturb=True)
  with_bad = good[:2] + [dict(result, image_id=1)] + good[2:]
  expected = evaluation.coco_keypoint_metrics(data, good, COCO17)
  assert evaluation.coco_keypoint_metrics(data, with_bad, COCO17) == dict(
      expected, results_non_finite=1)


def test_a_non_finite_result_neither_suppresses_nor_is_suppressed_by_nms():
  data = _canonical()
  a, b = _results(data, perturb=False)[:2]
  nan_copy = copy.deepcopy(a)
  nan_copy['keypoints'][0] = math.nan
  nan_copy['score'] = 2.0
  assert evaluation.oks_nms([a, nan_copy, b], COCO17) == [1, 2, 0]
  # A non-finite score goes last; its duplicate of a kept result is then suppressed.
  assert evaluation.oks_nms([dict(a, score=math.nan), b, a], COCO17) == [2, 1]


@pytest.mark.parametrize('area', [0, 0.0, -5, math.nan, 'missing', None])
def test_an_unusable_gt_area_is_estimated_and_counted(area, tmp_path, capsys):
  data = _canonical()
  w, h = data['annotations'][0]['bbox'][2:]
  estimated = copy.deepcopy(data)
  estimated['annotations'][0]['area'] = 0.53 * w * h  # what a missing area has always got
  if area == 'missing':
    del data['annotations'][0]['area']
  else:
    data['annotations'][0]['area'] = area
  results = _results(data, perturb=False)
  for r in results:  # 2 px off: AP 0 with an area of 0, as pycocotools divides by it
    r['keypoints'] = (np.asarray(r['keypoints']).reshape(17, 3) + [2, 0, 0]).reshape(-1).tolist()
  want = evaluation.coco_keypoint_metrics(estimated, results, COCO17)
  assert want['gt_area_estimated'] == 0 and want['AP'] > 0.5
  gt_path, _ = _write(tmp_path, data)
  status, got = _score_file(tmp_path, gt_path, results, capsys)
  assert status == 0
  assert got == dict(want, gt_area_estimated=1, box_source='as in the results file')


def test_an_annotation_of_an_unlisted_image_is_counted_not_scored():
  data = _canonical()
  results = _results(data, perturb=True)
  want = evaluation.coco_keypoint_metrics(data, results, COCO17)
  data['annotations'].append(dict(data['annotations'][0], id=99, image_id=7))
  got = evaluation.coco_keypoint_metrics(data, results, COCO17)
  assert got == dict(want, gt_unknown_image=1)  # as COCOeval, which only visits listed images


def test_mean_ap_leaves_out_tasks_without_ground_truth(monkeypatch):
  class Fixed:
    def __init__(self, task, ap, name):
      self.name, self.ap = name, ap

    def run(self, predictor):
      return {f'{self.name}/AP': self.ap}

  monkeypatch.setitem(evaluators.EVALUATORS, 'fixed', Fixed)
  got = evaluators.run_evaluators({t: dict(type='fixed', task=t, ap=ap) for t, ap in
                                   (('a', 0.6), ('b', -1.0), ('c', 0.2))}, None)
  assert got['mean/AP'] == pytest.approx(0.4)  # not (0.6 - 1 + 0.2) / 3
  assert got['mean/excluded'] == 'b (AP -1: no ground truth to score)'
  got = evaluators.run_evaluators({'b': dict(type='fixed', task='b', ap=-1.0)}, None)
  assert got['mean/AP'] == -1.0
  # Two evaluations of one task (its val data and a target population) keep their own names:
  # neither overwrites the other's metrics.
  got = evaluators.run_evaluators({'val': dict(type='fixed', task='coco', ap=0.5),
                                   'target': dict(type='fixed', task='coco', ap=0.1)}, None)
  assert (got['val/AP'], got['target/AP']) == (0.5, 0.1)
  assert got['mean/AP'] == pytest.approx(0.3)


def test_run_evaluation_reports_instances_the_loader_skipped(tmp_path):
  data = _canonical()
  data['images'][1]['file_name'] = 'missing.png'
  gt_path, images = _write(tmp_path, data)
  (tmp_path / 'images' / 'missing.png').unlink()
  got = _run(gt_path, images, _fake(data, perturb=False))
  # Both people of the missing image are scored as misses, and said to be.
  assert got['coco/gt_missed_by_loader'] == 2 and got['coco/instances'] == 4
  assert got['coco/gt_instances'] == 6 and got['coco/AR'] == pytest.approx(4 / 6)
  assert 'annotation 3: ' in got['coco/skipped'] and 'image file not found' in got['coco/skipped']


def test_bad_detections_are_skipped_counted_and_named(tmp_path):
  data = _variant('string image ids')
  gt_path, images = _write(tmp_path, data)
  dets = [{'image_id': a['image_id'], 'category_id': 1, 'bbox': a['bbox'], 'score': 0.9}
          for a in data['annotations']]
  dets[1:1] = [{'image_id': 'frame_0009', 'category_id': 1, 'bbox': [0, 0, 50, 80], 'score': 1},
               {'image_id': 'frame_0001', 'category_id': 1, 'bbox': [5, 5, 0, 10], 'score': 1},
               {'image_id': 'frame_0001', 'category_id': 1, 'bbox': [5, 5, 9, 10],
                'score': math.nan}]
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps(dets))
  got = _run(gt_path, images, _fake(data, perturb=False), detections=str(path))
  assert got['coco/detections_skipped'] == 3 and got['coco/instances'] == 6
  assert got['coco/AP'] == 1.0
  skipped = got['coco/skipped']
  assert "detection 1: image_id 'frame_0009' is not in" in skipped
  assert 'detection 2: bbox [5, 5, 0, 10]' in skipped and 'detection 3: score nan' in skipped


def test_wholebody_sizes_a_prediction_by_its_body_points():
  """One large person and a false positive ranked above it whose body is medium-sized (60 px)
  but whose other points spread over the image: xtcocotools and mmpose call it medium, so it
  does not count against APl."""
  wb = skeletons.get('coco_wholebody133')
  rng = np.random.default_rng(1)
  truth = np.zeros((133, 3))
  truth[:, 0], truth[:, 1], truth[:, 2] = rng.uniform(100, 300, 133), rng.uniform(100, 400, 133), 2
  fields = {'keypoints': (0, 17), 'foot_kpts': (17, 23), 'face_kpts': (23, 91),
            'lefthand_kpts': (91, 112), 'righthand_kpts': (112, 133)}
  ann = {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'bbox': [100, 100, 200, 300],
         'area': 60000.0, **{f: truth[a:b].reshape(-1).tolist() for f, (a, b) in fields.items()}}
  gt = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 1000, 'height': 1000}],
        'annotations': [ann], 'categories': [{'id': 1, 'name': 'person'}]}
  good = truth.copy()
  good[:, 2] = 1
  false = np.ones((133, 3))
  false[:17, :2] = rng.uniform(600, 660, (17, 2))
  false[17:, :2] = rng.uniform(0, 1000, (116, 2))
  results = [{'image_id': 1, 'category_id': 1, 'score': s, 'keypoints': k.reshape(-1).tolist()}
             for s, k in ((0.5, good), (1.0, false))]
  got = evaluation.wholebody_metrics(gt, results, wb)
  assert got['APl'] == pytest.approx(1.0)  # sized by all 133 points it would be 0.5
  assert got['AP'] == pytest.approx(0.5)  # over all sizes the false positive still counts


def test_oks_nms_breaks_score_ties_as_mmpose():
  """Equal scores: the later result first (mmpose's argsort()[::-1]), for any number of them."""
  people = [{'image_id': 1, 'score': 0.5, 'keypoints': (
      np.asarray(_results(_canonical(), False)[0]['keypoints']).reshape(17, 3)
      + [300 * n, 0, 0]).reshape(-1).tolist()} for n in range(20)]
  assert evaluation.oks_nms(people, COCO17) == list(range(19, -1, -1))
  people[4] = dict(people[4], score=0.9)
  assert evaluation.oks_nms(people[:6], COCO17) == [4, 5, 3, 2, 1, 0]
  # Per image: images in order of appearance, each in the order kept.
  on_two = [dict(p, image_id=1 + n % 2) for n, p in enumerate(people[:6])]
  assert evaluation.nms_per_image(on_two, COCO17) == [on_two[i] for i in (4, 2, 0, 5, 3, 1)]


# --- mmpose's top-down alignment, case 1 (tests/test_evaluation/test_metrics/test_coco_metric.py):
# predictions are the ground truth with x * 0.98, y * 1.02 and keypoint scores v * 0.8 in float32,
# box score 0.98; bbox_keypoint rescoring and OKS-NMS at 0.9. mmpose's expected stats:
ALIGNMENT_STATS = {
    'AP': 0.5287458745874587, 'AP50': 0.9042904290429042, 'AP75': 0.5009900990099009,
    'APm': 0.42475247524752474, 'APl': 0.6219554455445544, 'AR': 0.5833333333333333,
    'AR50': 0.9166666666666666, 'AR75': 0.5833333333333334, 'ARm': 0.44000000000000006,
    'ARl': 0.6857142857142857,
}
# mmpose's tests/data/coco/test_coco.json (four COCO val2017 images, 14 people), the fields
# COCOeval reads. Keypoints flat 17 x 3 [x, y, v].
ALIGNMENT_IMAGES = [785, 40083, 196141, 197388]
ALIGNMENT_PEOPLE = [  # (id, image_id, bbox, area, keypoints)
    (442619, 785, [280.79, 44.73, 218.7, 346.68], 27789.11055,
     [367, 81, 2, 374, 73, 2, 360, 75, 2, 386, 78, 2, 356, 81, 2, 399, 108, 2, 358, 129, 2,
      433, 142, 2, 341, 159, 2, 449, 165, 2, 309, 178, 2, 424, 203, 2, 393, 214, 2, 429, 294,
      2, 367, 273, 2, 466, 362, 2, 396, 341, 2]),
    (198196, 40083, [38.08, 110.95, 174.71, 174.71], 11025.219,
     [99, 144, 2, 104, 141, 2, 96, 137, 2, 0, 0, 0, 78, 133, 2, 56, 161, 2, 81, 162, 2, 0, 0,
      0, 103, 208, 2, 116, 204, 2, 0, 0, 0, 57, 246, 1, 82, 259, 1, 137, 219, 2, 138, 247, 2,
      177, 256, 2, 158, 296, 1]),
    (230195, 40083, [257.76, 139.06, 140.05, 154.21], 10171.9544,
     [343, 164, 2, 348, 160, 2, 340, 160, 2, 359, 163, 2, 332, 164, 2, 370, 189, 2, 334, 190,
      2, 358, 236, 2, 348, 234, 2, 339, 270, 2, 330, 262, 2, 378, 262, 2, 343, 254, 2, 338,
      280, 2, 283, 272, 2, 0, 0, 0, 0, 0, 0]),
    (1202706, 40083, [275.17, 126.5, 10.69, 68.26], 491.2669,
     [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    (460541, 196141, [247.76, 74.23, 169.67, 300.78], 17123.92955,
     [297, 111, 2, 299, 106, 2, 0, 0, 0, 314, 108, 2, 0, 0, 0, 329, 141, 2, 346, 125, 2, 295,
      164, 2, 323, 130, 2, 266, 155, 2, 279, 143, 2, 329, 225, 2, 331, 221, 2, 327, 298, 2,
      283, 269, 2, 398, 327, 2, 288, 349, 2]),
    (488308, 196141, [555.57, 99.84, 48.32, 113.05], 2789.0208,
     [589, 113, 2, 0, 0, 0, 0, 0, 0, 595, 112, 1, 584, 110, 2, 598, 123, 2, 579, 119, 2, 594,
      141, 2, 570, 137, 2, 576, 135, 2, 585, 139, 2, 590, 157, 2, 574, 156, 2, 589, 192, 2,
      565, 189, 1, 587, 222, 1, 557, 219, 1]),
    (508900, 196141, [440.85, 73.13, 16.79, 32.45], 285.7906,
     [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    (1717641, 196141, [453.77, 206.81, 177.23, 210.87], 21608.94075,
     [0, 0, 0, 0, 0, 0, 0, 0, 0, 552, 234, 2, 0, 0, 0, 531, 262, 2, 600, 283, 2, 480, 260, 2,
      622, 336, 2, 466, 242, 2, 0, 0, 0, 546, 365, 2, 592, 371, 2, 470, 351, 2, 551, 330, 2,
      519, 394, 2, 589, 391, 2]),
    (1724673, 196141, [36.12, 67.59, 30.41, 96.08], 1870.14015,
     [48, 79, 2, 50, 77, 2, 46, 77, 2, 54, 78, 2, 45, 78, 2, 57, 90, 2, 42, 90, 2, 63, 103, 2,
      42, 105, 2, 56, 113, 2, 49, 112, 2, 55, 117, 2, 44, 117, 2, 55, 140, 2, 47, 140, 2, 56,
      160, 2, 49, 159, 2]),
    (437295, 197388, [139.41, 102.25, 222.39, 241.57], 14250.29385,
     [334, 135, 2, 340, 129, 2, 331, 129, 2, 0, 0, 0, 319, 123, 2, 340, 146, 2, 292, 133, 2,
      353, 164, 2, 246, 144, 2, 354, 197, 2, 250, 185, 2, 293, 197, 2, 265, 187, 2, 305, 252,
      2, 231, 254, 2, 293, 321, 2, 193, 297, 2]),
    (467657, 197388, [287.17, 61.52, 74.88, 165.61], 3404.869,
     [345, 92, 2, 350, 87, 2, 341, 87, 2, 0, 0, 0, 330, 83, 2, 357, 94, 2, 316, 92, 2, 357,
      104, 2, 291, 123, 1, 351, 133, 2, 281, 136, 1, 326, 131, 1, 305, 128, 1, 336, 152, 1,
      303, 171, 1, 318, 206, 2, 294, 211, 1]),
    (531914, 197388, [540.04, 48.81, 99.96, 223.36], 8913.98475,
     [591, 78, 2, 594, 74, 2, 586, 74, 2, 0, 0, 0, 573, 70, 2, 598, 86, 2, 566, 93, 2, 626,
      105, 2, 546, 126, 2, 0, 0, 0, 561, 150, 2, 582, 150, 2, 557, 154, 2, 606, 194, 2, 558,
      209, 1, 591, 252, 2, 539, 262, 1]),
    (533949, 197388, [372.58, 170.84, 266.63, 217.19], 14267.20475,
     [580, 211, 2, 586, 206, 2, 574, 204, 2, 0, 0, 0, 562, 198, 2, 584, 220, 2, 529, 215, 2,
      599, 242, 2, 512, 260, 2, 619, 274, 2, 538, 285, 2, 537, 288, 2, 506, 277, 2, 562, 332,
      2, 452, 332, 2, 550, 387, 1, 402, 371, 2]),
    (543117, 197388, [0.5, 43.74, 90.1, 220.09], 8260.75085,
     [36, 79, 2, 40, 74, 2, 31, 75, 2, 0, 0, 0, 19, 69, 2, 45, 77, 2, 2, 89, 2, 74, 99, 2, 0,
      0, 0, 78, 92, 2, 0, 0, 0, 33, 149, 2, 7, 153, 2, 44, 196, 2, 2, 205, 2, 35, 245, 2, 0,
      0, 0]),
]


def test_mmpose_topdown_alignment_case_1():
  gt = {'images': [{'id': i, 'file_name': f'{i:012d}.jpg'} for i in ALIGNMENT_IMAGES],
        'categories': [{'id': 1, 'name': 'person'}],
        'annotations': [{'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
                         'bbox': bbox, 'area': area, 'keypoints': kpts}
                        for ann_id, image_id, bbox, area, kpts in ALIGNMENT_PEOPLE]}
  results = []
  for ann in gt['annotations']:
    kpts = np.asarray(ann['keypoints'], np.float32).reshape(17, 3)
    kpts *= np.float32([0.98, 1.02, 0.8])
    results.append({'image_id': ann['image_id'], 'category_id': 1, 'bbox': ann['bbox'],
                    'keypoints': kpts.reshape(-1).tolist(), 'score': float(np.float32(0.98))})
  rescored = evaluation.rescore(results)
  kept = evaluation.nms_per_image(rescored, COCO17, 0.9)
  assert len(kept) == len(results)  # no one is suppressed: only the order of ties matters
  got = evaluation.coco_keypoint_metrics(gt, kept, COCO17)
  assert {n: got[n] for n in ALIGNMENT_STATS} == pytest.approx(ALIGNMENT_STATS, abs=1e-12)
  # Ties kept in input order rank otherwise in COCOeval: AP 0.52719, not mmpose's.
  in_input_order = evaluation.coco_keypoint_metrics(gt, rescored, COCO17)
  assert in_input_order['AP'] == pytest.approx(0.52719, abs=1e-5)
