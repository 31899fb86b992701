"""Categories and keypoint layouts as real releases write them (issue 17, kinds 2 and 3).

Every file here is written by the test: the same people, each time in another release's layout
(the shapes follow mmpose's tests/data files: COCO-WholeBody, HumanArt, AIC, MHP, CrowdPose).
Perfect predictions must score AP 1.0, and one fixed perturbation must score exactly what it
scores on the canonical file (category 1, the schema's own names and layout), both through
``python -m vitpose_jax.evaluate --gt/--results`` and through run evaluation (the evaluators).
"""

import json

import numpy as np
import pytest
from PIL import Image

from vitpose_jax import evaluate, models, skeletons
from vitpose_jax.data import coco
from vitpose_jax.data.coco import DataError
from vitpose_jax.evaluation import KeypointEvaluator

COCO17 = skeletons.get('coco17')
WB = skeletons.get('coco_wholebody133')
WIDTH, HEIGHT = 160, 120
# Six people over two images: (image_id, bbox [x, y, w, h]); distinct boxes, so distinct crops.
PEOPLE = [(1, [4, 6, 60, 100]), (1, [70, 10, 50, 90]), (1, [40, 30, 44, 70]),
          (2, [8, 4, 70, 110]), (2, [90, 20, 56, 80]), (2, [30, 50, 36, 60])]
HUMANART_EXTRA = ('left_finger', 'right_finger', 'left_toe', 'right_toe')
WB_FIELDS = (('keypoints', 0, 17), ('foot_kpts', 17, 23), ('face_kpts', 23, 91),
             ('lefthand_kpts', 91, 112), ('righthand_kpts', 112, 133))
AIC_FILE = ('Right Shoulder', 'Right Elbow', 'Right Wrist', 'Left Shoulder', 'Left Elbow',
            'Left Wrist', 'Right Hip', 'Right Knee', 'Right Ankle', 'Left Hip', 'Left Knee',
            'Left Ankle', 'Head top', 'Neck')
MHP_FILE = ('Right-ankle', 'Right-knee', 'Right-hip', 'Left-hip', 'Left-knee', 'Left-ankle',
            'Pelvis', 'Thorax', 'Upper-neck', 'Head-top', 'Right-wrist', 'Right-elbow',
            'Right-shoulder', 'Left-shoulder', 'Left-elbow', 'Left-wrist')
OPENPOSE = ('Nose', 'LEye', 'REye', 'LEar', 'REar', 'LShoulder', 'RShoulder', 'LElbow', 'RElbow',
            'LWrist', 'RWrist', 'LHip', 'RHip', 'LKnee', 'RKnee', 'LAnkle', 'RAnkle')


def _labels(k, seed):
  """(6, k, 3) [x, y, v] inside each person's box; about one point in eight unlabelled."""
  rng = np.random.default_rng(seed)
  out = np.zeros((len(PEOPLE), k, 3))
  for p, (_, (x, y, w, h)) in enumerate(PEOPLE):
    out[p, :, 0] = rng.uniform(x + 2, x + w - 2, k).round(2)
    out[p, :, 1] = rng.uniform(y + 2, y + h - 2, k).round(2)
    out[p, :, 2] = rng.choice([0, 1, 2], k, p=[0.125, 0.175, 0.7])
  out[out[..., 2] == 0] = 0
  return out


def _flat(a):
  return np.asarray(a).reshape(-1).tolist()


def _dataset(per_person, category=None, categories=None):
  """A COCO file dict: ``per_person(p)`` gives person p's keypoint fields."""
  category = {'id': 1, 'name': 'person'} if category is None else category
  anns = [{'id': p + 1, 'image_id': image_id, 'category_id': category['id'], 'iscrowd': 0,
           'bbox': bbox, 'area': bbox[2] * bbox[3] * 0.6, **per_person(p)}
          for p, (image_id, bbox) in enumerate(PEOPLE)]
  return {'images': [{'id': i, 'file_name': f'{i}.png', 'width': WIDTH, 'height': HEIGHT}
                     for i in (1, 2)],
          'annotations': anns, 'categories': [category] if categories is None else categories}


def _coco17_variants():
  body = _labels(21, seed=1)  # 17 COCO points, then HumanArt's four
  wb = _labels(133, seed=2)
  wb[:, :17] = body[:, :17]
  person = {'id': 1, 'name': 'person', 'keypoints': list(COCO17.keypoints)}
  reverse = list(reversed(range(17)))
  others = [{'id': 1, 'name': 'car'}, {**person, 'id': 2}, {'id': 3, 'name': 'dog'}]
  with_others = _dataset(lambda p: {'keypoints': _flat(body[p, :17])}, {**person, 'id': 2},
                         others)
  with_others['annotations'] += [
      {'id': 100 + i, 'image_id': 1 + i % 2, 'category_id': c, 'iscrowd': 0,
       'bbox': [10.0 * i, 5.0, 30.0, 20.0], 'area': 400.0} for i, c in enumerate((1, 3, 3))]
  no_categories = _dataset(lambda p: {'keypoints': _flat(body[p, :17])})
  del no_categories['categories']
  return {
      'canonical': (_dataset(lambda p: {'keypoints': _flat(body[p, :17])}, person), 1),
      'category 2': (_dataset(lambda p: {'keypoints': _flat(body[p, :17])},
                              {**person, 'id': 2}), 2),
      'category "1"': (_dataset(lambda p: {'keypoints': _flat(body[p, :17])},
                                {**person, 'id': '1'}), '1'),
      'category 2 among others': (with_others, 2),
      'no categories list': (no_categories, 1),
      'OpenPose spellings': (_dataset(lambda p: {'keypoints': _flat(body[p, :17])},
                                      {**person, 'keypoints': list(OPENPOSE)}), 1),
      'names in another order': (
          _dataset(lambda p: {'keypoints': _flat(body[p, reverse])},
                   {**person, 'keypoints': [COCO17.keypoints[i] for i in reverse]}), 1),
      'COCO-WholeBody split fields': (
          _dataset(lambda p: {f: _flat(wb[p, a:b]) for f, a, b in WB_FIELDS}, person), 1),
      'mmpose flat WholeBody': (_dataset(lambda p: {'keypoints': _flat(wb[p])}, person), 1),
      'HumanArt 21 names, 17 points': (
          _dataset(lambda p: {'keypoints': _flat(body[p, :17]), 'keypoints_21': _flat(body[p])},
                   {**person, 'keypoints': list(COCO17.keypoints) + list(HUMANART_EXTRA)}), 1),
  }


def _wholebody_variants():
  wb = _labels(133, seed=2)
  person = {'id': 1, 'name': 'person', 'keypoints': list(COCO17.keypoints)}  # as released

  def split(p):
    return {f: _flat(wb[p, a:b]) for f, a, b in WB_FIELDS}

  return {
      'canonical': (_dataset(split, person), 1),
      'category "1"': (_dataset(split, {**person, 'id': '1'}), '1'),
      'mmpose flat, 17 names': (_dataset(lambda p: {'keypoints': _flat(wb[p])}, person), 1),
      'flat, no names': (_dataset(lambda p: {'keypoints': _flat(wb[p])},
                                  {'id': 1, 'name': 'person'}), 1),
      'split, all 133 names': (_dataset(split, {**person, 'keypoints': list(WB.keypoints)}), 1),
  }


def _renamed_variants(schema, release_names):
  labels = _labels(schema.num_keypoints, seed=3)
  own = {'id': 1, 'name': 'person', 'keypoints': list(schema.keypoints)}
  return {
      'canonical': (_dataset(lambda p: {'keypoints': _flat(labels[p])}, own), 1),
      'release spellings, category 2': (
          _dataset(lambda p: {'keypoints': _flat(labels[p])},
                   {**own, 'id': 2, 'keypoints': list(release_names)}), 2),
  }


CASES = {'coco17': _coco17_variants(), 'coco_wholebody133': _wholebody_variants(),
         'aic14': _renamed_variants(skeletons.get('aic14'), AIC_FILE),
         'mpii16': _renamed_variants(skeletons.get('mpii16'), MHP_FILE)}
VARIANTS = [(schema, name) for schema, variants in CASES.items() for name in variants]
# Pixels of noise that put each schema's AP near the middle (its sigmas set how much counts).
NOISE = {'coco17': 3.0, 'coco_wholebody133': 1.0, 'aic14': 1.0, 'mpii16': 3.0}


def _write(tmp_path, data):
  images = tmp_path / 'images'
  images.mkdir(exist_ok=True)
  for i in (1, 2):
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * i, np.uint8)).save(images / f'{i}.png')
  path = tmp_path / 'gt.json'
  path.write_text(json.dumps(data))
  return str(path), str(images)


def _predictions(schema_name, noise):
  """Per person: (K, 3) [x, y, score] in schema order, the truth moved by ``noise`` pixels (a
  fixed draw), with unlabelled truth points predicted anywhere."""
  data, _ = CASES[schema_name]['canonical']
  schema = skeletons.get(schema_name)
  rng = np.random.default_rng(7)
  out = []
  for ann in data['annotations']:
    kpts = coco.annotation_keypoints(ann, schema, data['categories'][0].get('keypoints')).astype(
        np.float64)
    kpts[:, :2] += rng.normal(0, noise, (schema.num_keypoints, 2))
    kpts[:, 2] = 1.0
    out.append(kpts)
  return out


class _Predictor:
  """Stands in for a model: each crop's keypoints are the given ones of the person whose box made
  it (found by the crop's centre), so the category and layout plumbing around it is real."""

  def __init__(self, schema, by_center):
    self.config = models.model_config('nano', {'t': schema}, image_size=(64, 48))
    self.by_center = by_center

  def keypoints(self, task, pixels, center, scale, rotation=None):
    return np.stack([self.by_center[tuple(np.round(c, 2))] for c in center])


def _run_evaluation(path, images, schema_name, predictions, detections=None, **kw):
  """Run evaluation of ``predictions`` (per person) on GT boxes, or on ``detections``: a list of
  (person index, COCO detection) written next to the data."""
  if detections is None:
    records, _ = coco.read_coco(path, images, skeletons.get(schema_name))
    crops = [(r['center'], predictions[r['instance_id'] - 1]) for r in records]
    dets_path = None
  else:
    crops = [(coco.box_to_center_scale(d['bbox'])[0], predictions[p]) for p, d in detections]
    dets_path = f'{path}.dets.json'
    with open(dets_path, 'w') as f:
      json.dump([d for _, d in detections], f)
  predictor = _Predictor(schema_name, {tuple(np.round(c, 2)): k for c, k in crops})
  evaluator = KeypointEvaluator(task='t', data=dict(source='coco', annotations=path,
                                                    images=images), detections=dets_path, **kw)
  return {k.removeprefix('t/'): v for k, v in evaluator.run(predictor).items()}


def _results_mode(path, schema_name, predictions, category, capsys, tmp_path):
  with open(path) as f:
    data = json.load(f)
  people = [a for a in data['annotations'] if a['id'] <= len(PEOPLE)]
  results = [{'image_id': a['image_id'], 'category_id': category, 'score': 1.0 - 0.01 * i,
              'keypoints': _flat(k)} for i, (a, k) in enumerate(zip(people, predictions))]
  dt = tmp_path / 'dt.json'
  dt.write_text(json.dumps(results))
  assert evaluate.main(['--gt', path, '--results', str(dt), '--schema', schema_name]) == 0
  return json.loads(capsys.readouterr().out)


def _scores(out):
  return {k: v for k, v in out.items() if k.startswith(('AP', 'AR'))}


@pytest.mark.parametrize('schema_name, variant', VARIANTS)
def test_perfect_predictions_score_ap_1_on_every_category_and_layout(schema_name, variant,
                                                                       tmp_path, capsys):
  data, category = CASES[schema_name][variant]
  path, images = _write(tmp_path, data)
  perfect = _predictions(schema_name, noise=0.0)
  written = tmp_path / 'written.json'
  scored = _results_mode(path, schema_name, perfect, category, capsys, tmp_path)
  run = _run_evaluation(path, images, schema_name, perfect, results_out=str(written))
  for out in (scored, run):
    assert out['AP'] == pytest.approx(1.0)
    assert all(out[f'AP_{part}'] == pytest.approx(1.0) for part, _, _ in
               skeletons.get(schema_name).parts)
  assert run['PCK@0.2'] == pytest.approx(1.0) and run['instances'] == len(PEOPLE)
  assert {r['category_id'] for r in json.loads(written.read_text())} == {category}


@pytest.mark.parametrize('schema_name, variant', [v for v in VARIANTS if v[1] != 'canonical'])
def test_a_perturbation_scores_exactly_as_on_the_canonical_file(schema_name, variant, tmp_path,
                                                                 capsys):
  noisy = _predictions(schema_name, NOISE[schema_name])
  scores = {}
  for name in ('canonical', variant):
    data, category = CASES[schema_name][name]
    folder = tmp_path / name.replace(' ', '_').replace('"', '')
    folder.mkdir()
    path, images = _write(folder, data)
    scores[name] = (_scores(_results_mode(path, schema_name, noisy, category, capsys, folder)),
                    _scores(_run_evaluation(path, images, schema_name, noisy)))
  results_mode, run = scores['canonical']
  assert 0.1 < results_mode['AP'] < 0.9
  assert run == results_mode
  assert scores[variant] == scores['canonical']


def test_detections_of_another_category_are_dropped_counted_and_reported(tmp_path):
  data, _ = CASES['coco17']['category 2']
  path, images = _write(tmp_path, data)
  dets = [(p, {'image_id': image_id, 'category_id': 2, 'bbox': bbox, 'score': 0.9})
          for p, (image_id, bbox) in enumerate(PEOPLE)]
  dets += [(0, {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 30, 30], 'score': 0.8}),
           (1, {'image_id': 1, 'category_id': '2', 'bbox': [1, 1, 30, 30], 'score': 0.8})]
  out = _run_evaluation(path, images, 'coco17', _predictions('coco17', 0.0), detections=dets)
  assert out['AP'] == pytest.approx(1.0) and out['instances'] == len(PEOPLE)
  assert out['detections_skipped'] == 2
  assert ("2 other category (e.g. detection 6: category_id 1 is not category 2 ('person') of "
          f'{path})') in out['detections_report']


def test_no_detection_of_the_keypoint_category_is_an_error_saying_why(tmp_path):
  data, _ = CASES['coco17']['category 2']
  path, images = _write(tmp_path, data)
  dets = [(p, {'image_id': image_id, 'category_id': 1, 'bbox': bbox, 'score': 0.9})
          for p, (image_id, bbox) in enumerate(PEOPLE)]
  with pytest.raises(DataError) as e:
    _run_evaluation(path, images, 'coco17', _predictions('coco17', 0.0), detections=dets)
  text = str(e.value)
  assert '\n' not in text and 'no detection left to evaluate' in text
  assert '6 other category (e.g. detection 0: category_id 1 is not category 2' in text


def test_results_of_another_category_are_a_one_line_error_naming_the_value(tmp_path, capsys):
  data, _ = CASES['coco17']['category "1"']
  path, _ = _write(tmp_path, data)
  results = [{'image_id': a['image_id'], 'category_id': 1, 'score': 1.0,
              'keypoints': a['keypoints']} for a in data['annotations']]
  (tmp_path / 'dt.json').write_text(json.dumps(results))
  code = evaluate.main(['--gt', path, '--results', str(tmp_path / 'dt.json'), '--schema', 'coco17'])
  err = capsys.readouterr().err
  assert code == 2 and err.count('\n') == 1
  assert (f"result 0 (image 1): category_id 1 is not category '1' ('person') of {path}") in err


def test_a_file_whose_category_names_match_nothing_is_an_error_listing_them(tmp_path, capsys):
  names = [f'kp{i}' for i in range(14)]
  data = _dataset(lambda p: {'keypoints': _flat(_labels(14, 0)[p])},
                  {'id': 1, 'name': 'person', 'keypoints': names})
  path, images = _write(tmp_path, data)
  with pytest.raises(DataError) as e:
    coco.read_coco(path, images, skeletons.get('aic14'))
  text = str(e.value)
  assert '\n' not in text
  assert text.startswith(f'{path}: no category holds keypoints of schema aic14')
  assert ("category 1 ('person') lists 14 keypoint names, none of them in the schema although the "
          "count matches; names not matched: 'kp0', 'kp1'") in text
  (tmp_path / 'dt.json').write_text('[]')
  assert evaluate.main(['--gt', path, '--results', str(tmp_path / 'dt.json'),
                        '--schema', 'aic14']) == 2
  assert 'no category holds keypoints of schema aic14' in capsys.readouterr().err


def test_a_labelled_point_the_schema_lacks_is_counted_and_reported(tmp_path):
  """CrowdPose's 'head' is the head top, but SMPL's is the skull centre: never guessed."""
  crowdpose = ['left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
               'right_wrist', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
               'right_ankle', 'head', 'neck']
  labels = _labels(14, seed=5)
  data = _dataset(lambda p: {'keypoints': _flat(labels[p])},
                  {'id': 1, 'name': 'person', 'keypoints': crowdpose})
  path, images = _write(tmp_path, data)
  aic = skeletons.get('aic14')
  records, report = coco.read_coco(path, images, aic)
  assert len(records) == len(PEOPLE)
  assert all(r['keypoints_visible'][aic.index('head_top')] == 0 for r in records)
  labelled = int((labels[:, 12, 2] > 0).sum())
  assert labelled > 0 and report.unplaced == {"'head'": labelled}
  assert (f"labelled keypoints the schema has no place for, dropped from kept instances: 'head' "
          f'in {labelled} (e.g. annotation ') in report.summary()


def test_wholebody_parts_read_with_coco17_are_reported_by_part(tmp_path):
  data, _ = CASES['coco17']['COCO-WholeBody split fields']
  path, images = _write(tmp_path, data)
  records, report = coco.read_coco(path, images, COCO17)
  assert len(records) == len(PEOPLE)
  assert set(report.unplaced) == {'WholeBody foot', 'WholeBody face', 'WholeBody lefthand',
                                  'WholeBody righthand'}


def test_humanart_gives_its_extra_points_to_a_schema_that_has_them(tmp_path):
  data, _ = CASES['coco17']['HumanArt 21 names, 17 points']
  path, images = _write(tmp_path, data)
  _, report = coco.read_coco(path, images, COCO17)
  assert not report.unplaced  # the 17 points COCO-17 reads are all 'keypoints' holds
  humanart21 = skeletons.make_schema('humanart21', data['categories'][0]['keypoints'],
                                       [.05] * 21)
  records, _ = coco.read_coco(path, images, humanart21)
  for record, ann in zip(records, data['annotations']):
    np.testing.assert_array_equal(
        np.concatenate([record['keypoints'], record['keypoints_visible'][:, None]], 1).reshape(-1),
        np.float32(ann['keypoints_21']))


def test_other_categories_are_counted_even_when_reading_strictly(tmp_path):
  data, _ = CASES['coco17']['category 2 among others']
  path, images = _write(tmp_path, data)
  records, report = coco.read_coco(path, images, COCO17, strict=True)
  assert len(records) == len(PEOPLE) and {r['category_id'] for r in records} == {2}
  assert report.counts == {'other category': 3}
  assert "category_id 1 is not category 2 ('person')" in report.summary()


def test_categories_sharing_one_keypoint_list_are_all_read_and_results_keep_theirs(tmp_path):
  """AP-10K lists 54 species with the same keypoints; mmpose's results carry each one's own."""
  labels = _labels(17, seed=6)
  names = list(COCO17.keypoints)
  data = _dataset(lambda p: {'keypoints': _flat(labels[p])},
                  categories=[{'id': 1, 'name': 'antelope', 'keypoints': names},
                              {'id': 2, 'name': 'bison', 'keypoints': names}])
  for ann in data['annotations'][::2]:
    ann['category_id'] = 2
  path, images = _write(tmp_path, data)
  written = tmp_path / 'written.json'
  out = _run_evaluation(path, images, 'coco17', list(labels), results_out=str(written))
  assert out['AP'] == pytest.approx(1.0)
  assert [r['category_id'] for r in json.loads(written.read_text())] == [
      a['category_id'] for a in data['annotations']]


def test_an_annotation_without_category_id_is_the_only_categorys(tmp_path):
  data, _ = CASES['coco17']['category 2']
  data = json.loads(json.dumps(data))
  del data['annotations'][0]['category_id']
  path, images = _write(tmp_path, data)
  records, _ = coco.read_coco(path, images, COCO17)
  assert [r['category_id'] for r in records] == [2] * len(PEOPLE)


@pytest.mark.parametrize('categories, message', [
    ([{'id': 1, 'name': 'person', 'keypoints': list(COCO17.keypoints)},
      {'id': 1, 'name': 'again'}], 'categories: two categories have id 1'),
    ([{'id': 1, 'name': 'person', 'keypoints': ['Head top', 'top_head']}],
     "category 1: keypoint names 'Head top' and 'top_head' both match keypoint 'head_top' of "
     'schema aic14'),
    ([{'id': 1, 'name': 'person', 'keypoints': 'nose'}],
     "category 1: keypoints 'nose' is not a list of names"),
])
def test_malformed_categories_are_one_line_errors(tmp_path, categories, message):
  data = _dataset(lambda p: {'keypoints': _flat(_labels(14, 0)[p])}, categories=categories)
  path, images = _write(tmp_path, data)
  with pytest.raises(DataError) as e:
    coco.read_coco(path, images, skeletons.get('aic14'))
  assert str(e.value) == f'{path}: {message}'


def test_a_short_keypoint_list_is_a_wrong_count_unless_the_file_says_why(tmp_path):
  """Fewer points than names are HumanArt's first names only with keypoints_<N> beside them, or
  when they are exactly the schema's; a truncated list is skipped and counted."""
  labels = _labels(17, seed=8)
  data = _dataset(lambda p: {'keypoints': _flat(labels[p, :16 if p == 0 else 17])},
                  {'id': 1, 'name': 'person', 'keypoints': list(COCO17.keypoints)})
  path, images = _write(tmp_path, data)
  records, report = coco.read_coco(path, images, COCO17)
  assert [r['instance_id'] for r in records] == [2, 3, 4, 5, 6]
  assert report.counts == {'wrong keypoint count': 1}
  assert ("annotation 1: keypoints hold 48 values, expected 51 for the category's 17 keypoint "
          'names') in report.summary()


def test_without_category_id_among_several_categories_an_annotation_is_counted(tmp_path):
  names = list(COCO17.keypoints)
  data = _dataset(lambda p: {'keypoints': _flat(_labels(17, 9)[p])},
                  categories=[{'id': 1, 'name': 'a', 'keypoints': names},
                              {'id': 2, 'name': 'b', 'keypoints': names}])
  del data['annotations'][0]['category_id']
  path, images = _write(tmp_path, data)
  records, report = coco.read_coco(path, images, COCO17)
  assert len(records) == len(PEOPLE) - 1 and report.counts == {'other category': 1}
  assert ("annotation 1: it has no category_id and the file has categories 1 ('a'), 2 ('b')"
          in report.summary())
