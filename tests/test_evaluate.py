"""Evaluation end to end through our own plumbing: crops, heatmaps, DARK-UDP decoding, the UDP
back-transform, results, sigmas, metrics; and the evaluate CLI."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vitpose_jax import checkpoint, codec, models, skeletons, synthetic
from vitpose_jax.data import coco, transforms
from vitpose_jax.evaluation import KeypointEvaluator, run_evaluators
from vitpose_jax.predict import Predictor

TASKS = {'coco': ('adult', 'coco17'), 'infant': ('infant', 'infant_smil25'),
         'wholebody': ('adult_wholebody', 'coco_wholebody133')}
NUM = 10


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('cache'))


@pytest.fixture(scope='module')
def model():
  return models.create_model(models.model_config('nano', {t: s for t, (_, s) in TASKS.items()}))


class _Oracle(Predictor):
  """A fake model: each crop's heatmaps are UDP Gaussians at chosen crop positions of the instance
  whose box made the crop (found by its centre), so everything after the network is real."""

  def __init__(self, model, positions):
    super().__init__(model, flip_test=False)
    self.positions = positions  # centre (x, y) → (K, 3) [x, y, w] in crop pixels

  def keypoints(self, task, pixels, center, scale, rotation=None):
    self._centers = center
    return super().keypoints(task, pixels, center, scale, rotation)

  def heatmaps(self, task, pixels, *, flip_test=None):
    kps = np.stack([self.positions[tuple(np.round(c, 3))] for c in self._centers])
    heatmaps, _ = self.config.codec.encode(kps[..., :2], kps[..., 2])
    return np.asarray(heatmaps)


def _gt(task, cache):
  population, schema_name = TASKS[task]
  schema = skeletons.get(schema_name)
  annotations, images = synthetic.dataset(population, 'val', NUM, 0, cache)
  records, _ = coco.read_coco(annotations, images, schema)
  return schema, annotations, records


def _crop_truth(record, config):
  matrix = transforms.udp_warp_matrix(record['center'], record['scale'], 0.0, config.image_size)
  return transforms.warp_points(record['keypoints'].astype(np.float64), matrix)


def _coco_eval_directly(annotations, results, schema):
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(annotations)
    dt = gt.loadRes(results)
    e = COCOeval(gt, dt, 'keypoints')
    e.params.kpt_oks_sigmas = np.array(schema.sigmas)
    e.evaluate()
    e.accumulate()
    e.summarize()
  return e.stats


@pytest.mark.parametrize('task', ['coco', 'infant'])
def test_evaluator_matches_cocoeval_on_hand_built_results(task, model, cache):
  schema, annotations, records = _gt(task, cache)
  config = model.config
  (hm_h, hm_w), (in_h, in_w) = config.heatmap_size, config.image_size
  to_crop = np.array([(in_w - 1) / (hm_w - 1), (in_h - 1) / (hm_h - 1)])
  rng = np.random.default_rng(0)
  positions, expected = {}, []
  for r in records:
    # Noisy predictions snapped to heatmap pixel centres (where a Gaussian's sampled maximum is
    # exactly 1, so every instance scores 1 and the ranking is the file order on both sides).
    noisy = _crop_truth(r, config) + rng.normal(0, 3 + 6 * rng.random(), (schema.num_keypoints, 2))
    grid = np.clip(np.round(noisy / to_crop), 2, [hm_w - 3, hm_h - 3])
    labelled = (r['keypoints_visible'] > 0).astype(np.float32)
    positions[tuple(np.round(r['center'], 3))] = np.concatenate(
        [grid * to_crop, labelled[:, None]], axis=1)
    image_xy = codec.crop_to_image(grid * to_crop, r['center'], r['scale'], 0.0,
                                   image_size=config.image_size)
    flat = np.concatenate([image_xy, labelled[:, None]], 1).ravel().tolist()
    expected.append({'image_id': r['image_id'], 'category_id': 1, 'score': 1.0, 'keypoints': flat})
  got = KeypointEvaluator(task=task, data=dict(source='synthetic', population=TASKS[task][0],
                                               num=NUM), cache_dir=cache).run(
      _Oracle(model, positions))
  want = _coco_eval_directly(annotations, expected, schema)
  assert 0.05 < want[0] < 0.95  # the noise makes the comparison informative
  for name, value in zip(('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR'), want):
    assert got[f'{task}/{name}'] == pytest.approx(value, abs=1e-6), name
  assert got[f'{task}/box_source'] == 'ground truth'


@pytest.mark.parametrize('task', list(TASKS))
def test_perfect_predictions_score_ap_1(task, model, cache):
  schema, _, records = _gt(task, cache)
  positions = {tuple(np.round(r['center'], 3)): np.concatenate(
      [_crop_truth(r, model.config), (r['keypoints_visible'][:, None] > 0)], axis=1)
      for r in records}
  got = run_evaluators({task: dict(type='keypoints', task=task, data=dict(
      source='synthetic', population=TASKS[task][0], num=NUM))}, _Oracle(model, positions),
      cache_dir=cache)
  assert got[f'{task}/AP'] == pytest.approx(1.0)
  assert got[f'{task}/PCK@0.2'] == pytest.approx(1.0)
  assert got['mean/AP'] == got[f'{task}/AP']
  if schema.head_segment:
    assert got[f'{task}/PCKh@0.5'] == pytest.approx(1.0)
  for part, _, _ in schema.parts:
    assert got[f'{task}/AP_{part}'] == pytest.approx(1.0)


def test_evaluate_cli_scores_a_results_file_and_a_run(model, cache, tmp_path):
  _, annotations, records = _gt('coco', cache)
  results = [{'image_id': r['image_id'], 'category_id': 1, 'score': 1.0,
              'keypoints': np.concatenate([r['keypoints'], r['keypoints_visible'][:, None]],
                                          axis=1).ravel().tolist()} for r in records]
  (tmp_path / 'dt.json').write_text(json.dumps(results))
  out = subprocess.run([sys.executable, '-m', 'vitpose_jax.evaluate', '--gt', annotations,
                        '--results', str(tmp_path / 'dt.json'), '--schema', 'coco17'],
                       check=True, capture_output=True, text=True).stdout
  assert json.loads(out)['AP'] == pytest.approx(1.0)
  run = tmp_path / 'run'
  checkpoint.save_model(str(run), model)
  env_cache = {'VITPOSE_JAX_CACHE': cache}
  done = subprocess.run([sys.executable, '-m', 'vitpose_jax.evaluate', '--workdir', str(run),
                         '--task', 'infant', '--synthetic', 'infant', '--num', str(NUM),
                         '--results-out', str(tmp_path / 'pred.json')],
                        capture_output=True, text=True, env={**os.environ, **env_cache})
  assert done.returncode == 0, done.stderr
  metrics = json.loads(done.stdout)
  assert {'infant/AP', 'infant/AR', 'infant/PCK@0.2', 'infant/PCKh@0.5', 'mean/AP'} <= set(metrics)
  assert metrics['infant/box_source'] == 'ground truth'
  assert len(json.loads((tmp_path / 'pred.json').read_text())) == metrics['infant/instances']


def test_detector_boxes_go_through_oks_nms_and_are_reported(model, cache, tmp_path):
  """Each person detected twice (the copy scoring lower): NMS keeps one per person."""
  _, annotations, records = _gt('coco', cache)
  with open(annotations) as f:
    anns = json.load(f)['annotations']
  dets = [{'image_id': a['image_id'], 'category_id': 1, 'bbox': a['bbox'], 'score': score}
          for a in anns for score in (0.9, 0.5)]
  (tmp_path / 'dets.json').write_text(json.dumps(dets))
  config = model.config
  positions = {}
  for a in anns:
    center, scale = coco.box_to_center_scale(a['bbox'])
    labels = coco.annotation_keypoints(a, skeletons.get('coco17'))
    r = {'center': center, 'scale': scale, 'keypoints': labels[:, :2]}
    positions[tuple(np.round(center, 3))] = np.concatenate(
        [_crop_truth(r, config), (labels[:, 2:] > 0)], axis=1)
  got = KeypointEvaluator(task='coco', data=dict(source='synthetic', population='adult', num=NUM),
                          detections=str(tmp_path / 'dets.json'), cache_dir=cache).run(
      _Oracle(model, positions))
  assert got['coco/instances'] == len(anns)
  assert got['coco/AP'] == pytest.approx(1.0)
  assert got['coco/box_source'] == 'detections (dets.json)'
  assert 'coco/PCK@0.2' not in got


def test_process_rows_give_every_process_as_many_batches_and_every_instance_once():
  from vitpose_jax.evaluation.evaluators import process_rows

  # 10 instances, 3 crops per process, 2 processes: global batches [0..5], [6..9].
  assert process_rows(10, 3, 0, 2) == [0, 1, 2, 6, 7, 8]
  assert process_rows(10, 3, 1, 2) == [3, 4, 5, 9]  # its last batch is padded by repetition
  assert process_rows(7, 3, 1, 2) == [3, 4, 5, -1]  # an empty share still runs a batch
  assert process_rows(10, 4, 0, 1) == list(range(10))
  for num, batch, count in [(10, 3, 2), (17, 4, 3), (5, 2, 4)]:
    shares = [process_rows(num, batch, p, count) for p in range(count)]
    assert len({-(-len(s) // batch) for s in shares}) == 1
    assert sorted(i for s in shares for i in s if i >= 0) == list(range(num))


_EIGHT_DEVICES = '''
import json, sys
import jax, numpy as np
from jax.sharding import Mesh
from vitpose_jax.evaluation import run_evaluators
from vitpose_jax.predict import Predictor

cache, out_dir = sys.argv[1:]
model = Predictor.from_run('zoo:micro-adult').model
out = {}
for n in (1, 8):
  predictor = Predictor(model, mesh=Mesh(np.array(jax.devices()[:n]), ('data',)))
  crops = np.zeros((6, *model.config.image_size, 3), np.uint8)
  devices = len(predictor.heatmaps('coco', crops).sharding.device_set)
  evals = {'coco': dict(type='keypoints', task='coco', batch_size=6,
                        results_out=f'{out_dir}/results_{n}.json',
                        data=dict(source='synthetic', population='adult', num=%d))}
  out[n] = {'devices': devices, 'metrics': run_evaluators(evals, predictor, cache_dir=cache)}
print(json.dumps(out))
'''


def test_evaluation_on_eight_devices_scores_as_on_one(cache, tmp_path):
  # Eight fake CPU devices need the flag before JAX starts: a process of its own. Batches of 6
  # over 8 devices are padded inside the predictor; the last of 10 instances by the pipeline.
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  done = subprocess.run([sys.executable, '-c', _EIGHT_DEVICES % NUM, cache, str(tmp_path)],
                        capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out['1']['devices'] == 1 and out['8']['devices'] == 8
  one, eight = out['1']['metrics'], out['8']['metrics']
  assert one['coco/instances'] == eight['coco/instances'] == NUM
  assert one['coco/AP'] > 0.1  # a trained model: the comparison says something
  assert one.keys() == eight.keys()
  for k, v in one.items():
    assert eight[k] == (pytest.approx(v, abs=1e-6) if isinstance(v, float) else v), k
  results = [json.loads((tmp_path / f'results_{n}.json').read_text()) for n in (1, 8)]
  assert [r['image_id'] for r in results[0]] == [r['image_id'] for r in results[1]]
  np.testing.assert_allclose([r['keypoints'] for r in results[0]],
                             [r['keypoints'] for r in results[1]], atol=2e-3)


_PROCESS = '''
import json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, pid, cache = sys.argv[1:]
jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=int(pid))
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vitpose_jax import checkpoint
from vitpose_jax.evaluation import run_evaluators
from vitpose_jax.predict import Predictor

# As in training: the model replicated over a mesh of both processes' devices.
model, _ = checkpoint.load_model('zoo:micro-adult')
mesh = Mesh(np.array(jax.devices()), ('data',))
graphdef, state = nnx.split(model)
state = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
    NamedSharding(mesh, P()), np.asarray(x)), state)
evals = {'coco': dict(type='keypoints', task='coco', batch_size=6,
                      data=dict(source='synthetic', population='adult', num=%d))}
metrics = run_evaluators(evals, Predictor(nnx.merge(graphdef, state), mesh=mesh), cache_dir=cache)
print(json.dumps({'devices': len(jax.devices()), 'metrics': metrics}))
'''


def test_two_processes_evaluate_together_as_one_does(cache):
  import socket

  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = str(s.getsockname()[1])
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  runs = [subprocess.Popen([sys.executable, '-c', _PROCESS % NUM, port, str(pid), cache],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
          for pid in (0, 1)]
  outs = [run.communicate(timeout=600) for run in runs]
  for run, (_, err) in zip(runs, outs):
    assert run.returncode == 0, err[-3000:]
  got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  evals = {'coco': dict(type='keypoints', task='coco', batch_size=6,
                        data=dict(source='synthetic', population='adult', num=NUM))}
  want = run_evaluators(evals, Predictor.from_run('zoo:micro-adult'), cache_dir=cache)
  for g in got:
    assert g['devices'] == 4
    assert g['metrics'].keys() == want.keys()
    for k, v in want.items():
      assert g['metrics'][k] == (pytest.approx(v, abs=1e-6) if isinstance(v, float) else v), k
