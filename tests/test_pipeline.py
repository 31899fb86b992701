"""The multi-task pipeline: per-task batch composition, host sharding, checkpointable state; data
specs through the source registry; synthetic datasets in the cache and what generating them prints."""

import json
import os
import re
import subprocess
import sys
import threading

import grain
import numpy as np
import pytest

from vitpose_jax import skeletons, synthetic
from vitpose_jax.data import pipeline, sources
from vitpose_jax.data.coco import DataError

COCO17 = skeletons.get('coco17')


def _source(n, offset):
  return [{'x': np.full((2, 3), offset + i, np.float32), 'instance_id': np.int64(offset + i)}
          for i in range(n)]


def _tasks(a=4, b=2):
  return [pipeline.TaskData('a', COCO17, _source(10, 0), a),
          pipeline.TaskData('b', COCO17, _source(7, 100), b)]


def test_every_batch_holds_each_tasks_configured_share():
  it = pipeline.make_iterator(pipeline.train_dataset(_tasks(), seed=0))
  seen = {'a': [], 'b': []}
  for _ in range(10):
    batch = next(it)
    assert set(batch) == {'a', 'b'}
    assert batch['a']['x'].shape == (4, 2, 3) and batch['b']['x'].shape == (2, 2, 3)
    for t in batch:
      seen[t] += batch[t]['instance_id'].tolist()
  # 40 draws from 10 'a' instances: whole epochs, each instance four times, order reshuffled.
  assert sorted(seen['a']) == sorted(list(range(10)) * 4)
  assert seen['a'][:10] != seen['a'][10:20]
  assert set(seen['b']) == set(range(100, 107))


def test_hosts_split_every_global_batch_whatever_their_number():
  single = pipeline.make_iterator(pipeline.train_dataset(_tasks(), seed=0))
  hosts = [pipeline.make_iterator(pipeline.train_dataset(_tasks(), seed=0, process_index=i,
                                                         process_count=2)) for i in range(2)]
  for _ in range(5):
    want = next(single)
    parts = [next(h) for h in hosts]
    assert parts[0]['a']['x'].shape[0] == 2 and parts[0]['b']['x'].shape[0] == 1
    for t in want:
      np.testing.assert_array_equal(
          np.concatenate([p[t]['instance_id'] for p in parts]), want[t]['instance_id'])


def test_batch_share_must_divide_over_processes():
  with pytest.raises(DataError, match="task 'b': batch_size 3 is not divisible by the 2"):
    pipeline.train_dataset(_tasks(b=3), seed=0, process_count=2)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_restoring_the_iterator_state_reproduces_the_next_batch(num_workers):
  ds = pipeline.train_dataset(_tasks(), seed=3)
  it = pipeline.make_iterator(ds, num_workers=num_workers)
  for _ in range(4):
    next(it)
  state = it.get_state()
  want = next(it)
  again = pipeline.make_iterator(ds, num_workers=num_workers)
  again.set_state(state)
  got = next(again)
  for t in want:
    np.testing.assert_array_equal(got[t]['x'], want[t]['x'])
  if num_workers:
    it.close()
    again.close()


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
  first = [next(pipeline.make_iterator(pipeline.train_dataset(_tasks(), seed=s)))['a']['x']
           for s in (1, 1, 2)]
  np.testing.assert_array_equal(first[0], first[1])
  assert not np.array_equal(first[0], first[2])


def _builder_priority(_):
  thread = threading.get_native_id()
  return os.sched_getscheduler(thread), os.getpriority(os.PRIO_PROCESS, thread)


@pytest.mark.skipif(sys.platform != 'linux', reason='per-thread priorities are Linux only')
@pytest.mark.parametrize('priority', ['idle', 'nice'])
def test_batches_are_built_at_the_given_priority_and_the_main_thread_keeps_its_own(priority):
  main = _builder_priority(None)
  policy, nice = main
  dataset = grain.MapDataset.range(6).map(_builder_priority)
  setting, built = (('idle', (os.SCHED_IDLE, nice)) if priority == 'idle'
                    else (str(nice + 3), (policy, nice + 3)))  # as a config override gives it
  threaded = list(pipeline.make_iterator(dataset, num_threads=2, priority=setting))
  assert threaded == [built] * 6
  # Without prefetch threads the main thread builds the batches and is never lowered.
  inline = list(pipeline.make_iterator(dataset, num_threads=0, priority=setting))
  assert inline == [main] * 6 and _builder_priority(None) == main


@pytest.mark.parametrize('priority', ['low', 20, -1, True, 2.5, '20', ''])
def test_a_bad_builder_priority_is_an_error_naming_it(priority):
  with pytest.raises(pipeline.DataError, match=re.escape(repr(priority))):
    pipeline.make_iterator(grain.MapDataset.range(2), priority=priority)


def test_unknown_data_specs_are_clear_errors():
  with pytest.raises(DataError,
                     match="source 'tfrecord' is not one of 'coco', 'detections', 'synthetic'"):
    pipeline.open_source({'source': 'tfrecord'}, COCO17)
  with pytest.raises(DataError, match='coco data spec needs annotations and images'):
    pipeline.open_source({'source': 'coco', 'annotations': 'a.json'}, COCO17)
  with pytest.raises(DataError, match=re.escape(
      "synthetic data spec needs population and num (and optionally seed, style, labels, subset); got ['num', 'size']")):
    pipeline.open_source({'source': 'synthetic', 'num': 3, 'size': 2}, COCO17)
  with pytest.raises(DataError, match="unknown synthetic population 'robots'"):
    synthetic.dataset('robots', 'train', 10)


def test_the_pipeline_knows_no_generator_until_a_spec_names_it():
  code = ('import sys\n'
          'from vitpose_jax.data import pipeline, sources\n'
          'assert "vitpose_jax.synthetic" not in sys.modules\n'
          'print(sources.kind("synthetic").required)\n')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "('population', 'num')"


def test_a_registered_source_kind_resolves_its_specs_and_prepares_them_together(monkeypatch):
  monkeypatch.setattr(sources, '_KINDS', dict(sources._KINDS))
  prepared = []
  sources.register(sources.SourceKind(
      'mine', required=('name',), optional=(),
      files=lambda spec, split, cache_dir: (f'{spec["name"]}-{split}.json', 'images'),
      prepare=lambda pairs, cache_dir: prepared.append(pairs)))
  assert sources.files({'source': 'mine', 'name': 'x'}, 'val') == ('x-val.json', 'images')
  sources.prepare([({'source': 'mine', 'name': 'a'}, 'train'),
                   ({'source': 'coco', 'annotations': 'a.json', 'images': 'i'}, 'val'),
                   ({'source': 'mine', 'name': 'b'}, 'val')])
  assert prepared == [[({'name': 'a'}, 'train'), ({'name': 'b'}, 'val')]]
  with pytest.raises(ValueError, match="data source 'mine' is already registered"):
    sources.register(sources.SourceKind('mine', (), (), files=lambda *a: ('', '')))


def test_synthetic_data_flows_through_packing_transforms_and_the_codec(tmp_path):
  """The default run's path end to end: generate → pack → grain transforms → batch → targets."""
  from vitpose_jax import codec
  from vitpose_jax.data import transforms

  tasks = []
  for name, population, schema_name, share in (('coco', 'adult', 'coco17', 4),
                                               ('infant', 'infant', 'infant_smil25', 2)):
    schema = skeletons.get(schema_name)
    spec = dict(source='synthetic', population=population, num=12, seed=1)
    source = pipeline.open_source(spec, schema, cache_dir=str(tmp_path))
    assert len(source) == 12
    tasks.append(pipeline.TaskData(name, schema, source, share,
                                   tuple(transforms.train_transforms(schema, (256, 192)))))
  dataset = pipeline.train_dataset(tasks, seed=0)
  it = pipeline.make_iterator(dataset)
  batch = next(it)
  # Random augmentations are keyed by element index and seed, so a restored state resumes them.
  state = it.get_state()
  want = next(it)
  resumed = pipeline.make_iterator(dataset)
  resumed.set_state(state)
  got = next(resumed)
  for t in want:
    np.testing.assert_array_equal(got[t]['image'], want[t]['image'])
    np.testing.assert_array_equal(got[t]['keypoints'], want[t]['keypoints'])
    np.testing.assert_array_equal(got[t]['keypoint_weights'], want[t]['keypoint_weights'])
  for task, k in (('coco', 17), ('infant', 25)):
    b = batch[task]
    assert b['image'].shape == (tasks[0].batch_size if task == 'coco' else 2, 256, 192, 3)
    # uint8 crops, not blank: the model normalises them.
    assert b['image'].dtype == np.uint8 and b['image'].std() > 10
    assert b['keypoints'].shape[1:] == (k, 2) and b['keypoint_weights'].shape[1:] == (k,)
    assert set(np.unique(b['keypoint_weights'])) <= {0.0, 1.0}
    np.testing.assert_array_equal(b['keypoint_weights'], b['keypoints_visible'] > 0)
    heatmaps, weights = codec.UDPHeatmap((256, 192), (64, 48)).encode(b['keypoints'],
                                                                       b['keypoint_weights'])
    assert heatmaps.shape == (b['keypoints'].shape[0], 64, 48, k)
    assert float(weights.sum()) > 0
  # The cache is reused: a second open generates and packs nothing new.
  before = sorted(p.name for p in (tmp_path / 'packed').iterdir())
  pipeline.open_source(dict(source='synthetic', population='adult', num=12, seed=1),
                       skeletons.get('coco17'), cache_dir=str(tmp_path))
  assert sorted(p.name for p in (tmp_path / 'packed').iterdir()) == before


def test_eval_batches_cover_the_source_once_in_order_with_a_padded_last_batch():
  batches = list(pipeline.eval_batches(_source(7, 0), (), 3))
  assert [valid for _, valid in batches] == [3, 3, 1]
  assert all(b['x'].shape == (3, 2, 3) for b, _ in batches)
  ids = [int(i) for b, valid in batches for i in b['instance_id'][:valid]]
  assert ids == list(range(7))
  assert batches[-1][0]['instance_id'].tolist() == [6, 6, 6]


def test_missing_synthetic_datasets_are_generated_in_parallel_processes(tmp_path):
  specs = [('adult', 'val', 3, 0), ('infant', 'val', 3, 0), ('adult', 'val', 3, 0)]
  synthetic.generate_datasets(specs, cache_dir=str(tmp_path), workers=2)
  for population in ('adult', 'infant'):
    annotations, _ = synthetic.dataset(population, 'val', 3, 0, str(tmp_path))
    with open(annotations) as f:
      assert len(json.load(f)['annotations']) == 3


def test_a_large_synthetic_dataset_is_its_shards_renumbered_and_reuses_a_smaller_ones(
    tmp_path, monkeypatch):
  monkeypatch.setattr(synthetic.cache, 'SHARD_SIZE', 3)
  cache = str(tmp_path)
  synthetic.generate_datasets([('adult', 'val', 7, 0)], cache_dir=cache, workers=1)
  annotations, images = synthetic.dataset('adult', 'val', 7, 0, cache)
  with open(annotations) as f:
    data = json.load(f)
  assert len(data['annotations']) == 7
  assert [a['id'] for a in data['annotations']] == list(range(1, 8))
  assert [i['id'] for i in data['images']] == list(range(1, len(data['images']) + 1))
  image_ids = {i['id'] for i in data['images']}
  assert all(a['image_id'] in image_ids for a in data['annotations'])
  for img in data['images']:
    assert os.path.isfile(os.path.join(images, img['file_name']))
  # Shard 0 is the 3-instance dataset; the other shards are independent draws, not repeats.
  first, _ = synthetic.dataset('adult', 'val', 3, 0, cache)
  with open(first) as f:
    small = json.load(f)['annotations']
  assert [a['keypoints'] for a in data['annotations'][:3]] == [a['keypoints'] for a in small]
  assert data['annotations'][3]['keypoints'] != small[0]['keypoints']
  # A larger dataset generates only its new shards.
  shards = sorted(p.name for p in (tmp_path / 'synthetic').glob('v*/*shard*'))
  assert shards == ['adult-val-n1-s0-shard2', 'adult-val-n3-s0-shard1']
  synthetic.dataset('adult', 'val', 9, 0, cache)
  shards = sorted(p.name for p in (tmp_path / 'synthetic').glob('v*/*shard*'))
  assert shards == ['adult-val-n1-s0-shard2', 'adult-val-n3-s0-shard1', 'adult-val-n3-s0-shard2']
  source = pipeline.open_source(dict(source='synthetic', population='adult', num=7, seed=0),
                                skeletons.get('coco17'), split='val', cache_dir=cache)
  assert len(source) == 7


def test_generating_and_packing_say_what_they_do_and_tfds_bars_stay_out(tmp_path, capfd):
  spec = dict(source='synthetic', population='infant', num=3, seed=0)
  sources.prepare([(spec, 'train')], cache_dir=str(tmp_path))
  pipeline.open_source(spec, skeletons.get('infant_smil25'), cache_dir=str(tmp_path))
  out, err = capfd.readouterr()
  lines = out.splitlines()
  assert lines[0].startswith('synthetic data: generating 3 instances (infant train 3) into ')
  assert lines[0].endswith(', 1 worker')
  assert re.fullmatch(r'synthetic data: 3 instances generated in \d+ s', lines[1])
  assert re.fullmatch(r'packing .*infant-train-n3-s0/annotations\.json \(infant_smil25\) into .*',
                      lines[2])
  assert re.fullmatch(r'packed 3 instances in \d+ s', lines[3])
  assert 'Shuffling' not in out + err and 'incomplete' not in out + err
  # Cached: a second open generates and packs nothing, and says nothing.
  sources.prepare([(spec, 'train')], cache_dir=str(tmp_path))
  pipeline.open_source(spec, skeletons.get('infant_smil25'), cache_dir=str(tmp_path))
  assert capfd.readouterr() == ('', '')


def test_progress_lines_come_while_shards_generate_in_worker_processes(tmp_path, capfd,
                                                                      monkeypatch):
  monkeypatch.setattr(synthetic.cache, 'SHARD_SIZE', 2)
  synthetic.generate_datasets([('adult', 'val', 4, 0)], cache_dir=str(tmp_path), workers=2,
                              interval=0.)
  lines = capfd.readouterr().out.splitlines()
  assert lines[0].startswith('synthetic data: generating 4 instances (adult val 4) into ')
  assert lines[0].endswith(', 2 workers')
  counts = [int(m.group(1)) for line in lines[1:-1]
            for m in [re.fullmatch(r'synthetic data: (\d)/4 instances \(\d+ s\)', line)]]
  assert counts and counts == sorted(counts) and counts[-1] == 4
  assert re.fullmatch(r'synthetic data: 4 instances generated in \d+ s', lines[-1])
