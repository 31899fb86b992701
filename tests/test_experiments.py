"""Benchmark scripts keep running (a tiny configuration; the numbers themselves are not checked)."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

from conftest import require_extra

ROOT = pathlib.Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / 'experiments'))

import common  # noqa: E402  (experiments/common.py: the experiment scripts' shared helpers)


def _is_png(path) -> bool:
  with Image.open(path) as image:
    return image.format == 'PNG' and min(image.size) > 100


def test_bar_plot_draws_a_bar_for_each_arm_and_group_that_ran(tmp_path):
  require_extra('matplotlib')
  table = {'scratch': {'coco': (0.5, 0.1), 'mean': (0.4, 0.0)},
           'finetune': {'coco': (0.7, 0.05), 'infant': (0.2, 0.02), 'mean': (0.45, 0.01)}}
  figure = common.bar_plot(table, ['coco', 'infant', 'mean'], str(tmp_path / 'ap.png'), 'AP')
  axes, = figure.axes
  bars = [(round(p.get_x() + p.get_width() / 2, 3), p.get_height()) for p in axes.patches]
  # scratch did not run on infant: its slot (x = 1 - 0.2) stays empty.
  assert bars == [(-0.2, 0.5), (1.8, 0.4), (0.2, 0.7), (1.2, 0.2), (2.2, 0.45)]
  assert [t.get_text() for t in axes.get_xticklabels()] == ['coco', 'infant', 'mean']
  assert [t.get_text() for t in axes.get_legend().get_texts()] == ['scratch', 'finetune']
  assert axes.get_ylabel() == 'AP'
  assert _is_png(tmp_path / 'ap.png')


def test_forward_benchmark_runs_and_reports_throughput():
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/forward.py'), '--variant', 'nano',
       '--height', '64', '--width', '48', '--batch', '4', '--tasks', '2', '--iters', '1'],
      check=True, capture_output=True, text=True).stdout
  assert 'ViTPose-nano (factorized, 2 tasks' in out
  assert 'img/s' in out


def test_mean_pose_baseline_runs_and_reports_every_task(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path)}
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/baseline_mean_pose.py'), '--num-train', '8',
       '--num-val', '4'], check=True, capture_output=True, text=True, env=env).stdout
  metrics = json.loads(out.strip().splitlines()[-1])
  assert {'coco/AP', 'wholebody/AP_body', 'infant/AP', 'wheelchair/AP'} <= set(metrics)


@pytest.mark.slow
def test_distillation_experiment_writes_its_table_and_plot(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out_dir = tmp_path / 'results'
  subprocess.run(
      [sys.executable, str(ROOT / 'experiments/distill_synthetic.py'), '--out', str(out_dir),
       '--teacher', 'nano', '--student', 'nano', '--tasks', 'coco+infant', '--teacher-steps', '2',
       '--token-steps', '2', '--student-steps', '2', '--seeds', '1', '--num-train', '8',
       '--num-val', '4'], check=True, capture_output=True, text=True, env=env)
  table = (out_dir / 'results.md').read_text()
  assert table.startswith('`python experiments/distill_synthetic.py')
  for arm in ('student alone', '+ heatmap KD', '+ token KD', '+ both'):
    assert f'| {arm} | ' in table
  assert _is_png((out_dir / 'ap.png'))
  results = json.loads((out_dir / 'results.json').read_text())
  assert len(results['per_seed']['+ both']) == 1
  assert set(results['table']['+ both']) == {'coco', 'infant', 'mean'}


def _run_experiment(script, out_dir, cache, *args):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(cache)}
  subprocess.run([sys.executable, str(ROOT / 'experiments' / script), '--out', str(out_dir),
                  '--variant', 'nano', '--num-train', '10', '--num-val', '4', '--seeds', '1',
                  *args], check=True, capture_output=True, text=True, env=env)
  return (out_dir / 'results.md').read_text(), json.loads((out_dir / 'results.json').read_text())


@pytest.mark.slow
def test_factorization_ablation_writes_its_table_and_plot(tmp_path):
  table, results = _run_experiment('factorization_ablation.py', tmp_path / 'out',
                                   tmp_path / 'cache', '--tasks', 'coco+infant', '--steps', '2',
                                   '--batch', '2')
  assert table.startswith('`python experiments/factorization_ablation.py')
  for arm in ('factorized multi-task', 'shared multi-task', 'separate single-task'):
    assert f'| {arm} | ' in table
  # Serving two tasks: separate models hold two backbones, the factorized one two experts.
  params = results['params']
  assert params['shared multi-task'] < params['factorized multi-task'] < params[
      'separate single-task']
  assert set(results['table']['shared multi-task']) == {
      'coco/AP', 'coco/PCK@0.2', 'infant/AP', 'infant/PCK@0.2', 'mean/AP'}
  assert _is_png((tmp_path / 'out' / 'ap.png'))


@pytest.mark.slow
def test_adapt_infants_scores_every_arm_on_test_seeds_and_accumulates_arms(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out = tmp_path / 'out'
  base = [sys.executable, str(ROOT / 'experiments' / 'adapt_infants.py'), '--out', str(out),
          '--runlocal', '--batch', '2', '--seeds', '1', '--num-test', '4']
  for arms in ('source,silhouette', 'source-aug'):
    subprocess.run(base + ['--arms', arms], check=True, capture_output=True, text=True, env=env)
  table = (out / 'results.md').read_text()
  results = json.loads((out / 'results.json').read_text())
  assert table.startswith('`python experiments/adapt_infants.py')
  assert list(results['table']) == ['source', 'source-aug', 'silhouette']
  assert all(len(results['per_seed'][a]) == 1 for a in results['table'])
  for arm in ('source only', 'source + strong aug', '+ prior + silhouette'):
    assert f'| {arm} | ' in table
  assert 'seed 1000, 4 instances' in table
  scored = json.loads((out / 'runs' / 'silhouette-seed0' / 'test_metrics.json').read_text())
  assert scored['target/instances'] == 4
  rows = [json.loads(line) for line in open(out / 'runs' / 'silhouette-seed0' / 'metrics.jsonl')]
  assert {'train/target_prior', 'train/target_silhouette'} <= set(rows[-1])
  assert _is_png(out / 'ap.png')


@pytest.mark.slow
def test_adapt_infants_few_label_arms_score_their_own_head_and_schema(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out = tmp_path / 'out'
  subprocess.run([sys.executable, str(ROOT / 'experiments' / 'adapt_infants.py'), '--out',
                  str(out), '--runlocal', '--batch', '2', '--seeds', '1', '--num-test', '4',
                  '--labels', '0.1', '--arms', 'finetune,adversarial'],
                 check=True, capture_output=True, text=True, env=env)
  table = (out / 'results.md').read_text()
  results = json.loads((out / 'results.json').read_text())
  assert list(results['table']) == ['finetune', 'adversarial']
  assert results['labels'] == 0.1 and results['schema'] == 'infant_smil25'
  assert results['test']['population'] == 'infant' and results['test']['style'] == 'shifted'
  assert '| + mixing + adversarial | ' in table and 'AP vs fine-tune' in table
  scored = json.loads((out / 'runs' / 'adversarial-seed0' / 'test_metrics.json').read_text())
  assert scored['target/instances'] == 4
  config = json.loads((out / 'runs' / 'adversarial-seed0' / 'config.json').read_text())
  assert config['tasks']['target']['schema'] == 'infant_smil25'
  assert config['tasks']['target']['train']['subset'] == [0.0, 0.1]
  # Without --labels the few-label arms are unknown, and the other way round.
  wrong = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'adapt_infants.py'),
                          '--arms', 'adversarial'], capture_output=True, text=True, env=env)
  assert wrong.returncode == 2 and 'with --labels: finetune' in wrong.stderr


@pytest.mark.slow
def test_finetune_populations_scores_on_test_seeds_and_accumulates_arms(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out = tmp_path / 'out'
  base = [sys.executable, str(ROOT / 'experiments' / 'finetune_populations.py'), '--out',
          str(out), '--variant', 'nano', '--targets', 'infant', '--num-train', '8',
          '--num-test', '4', '--seeds', '2', '--steps', '2', '--batch', '2']
  for extra in (['--fractions', '0.5,1.0'], ['--fractions', '0.5', '--arms', 'finetune-fresh']):
    subprocess.run(base + extra, check=True, capture_output=True, text=True, env=env)
  table = (out / 'results.md').read_text()
  results = json.loads((out / 'results.json').read_text())
  assert table.startswith('`python experiments/finetune_populations.py')
  assert len(results['commands']) == 2 and '--arms finetune-fresh' in results['commands'][1]
  assert set(results['table']) == {'scratch', 'finetune', 'finetune-fresh'}
  assert set(results['table']['scratch']) == {'infant 50%', 'infant 100%'}
  assert set(results['table']['finetune-fresh']) == {'infant 50%'}
  assert [len(results['per_seed']['infant 50%'][a]) for a in results['table']] == [2, 2, 2]
  # the fresh-keypoint arm did not run at 100%: its cells say so
  row = next(line for line in table.splitlines() if line.startswith('| infant 100% |'))
  assert row.split(' | ')[3] == '—'
  assert 'synthetic seed 1000, 4 instances' in table
  scored = json.loads((out / 'runs' / 'infant-50pct-finetune-seed1' / 'test_metrics.json')
                      .read_text())
  assert scored['infant/instances'] == 4
  assert _is_png((out / 'ap.png'))


@pytest.mark.slow
def test_learning_curve_writes_a_curve_per_arm_and_accumulates_arms(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out_dir = tmp_path / 'results'
  for arm in ('128x96-flip', '128x96-light-8k'):
    subprocess.run(
        [sys.executable, str(ROOT / 'experiments/learning_curve.py'), '--out', str(out_dir),
         '--arms', arm, '--variant', 'nano', '--batch', '4', '--samples', '16',
         '--eval-every', '8', '--num-train', '8', '--num-val', '4'],
        check=True, capture_output=True, text=True, env=env)
  results = json.loads((out_dir / 'results.json').read_text())
  assert set(results['arms']) == {'128x96-flip', '128x96-light-8k'}
  for arm in results['arms'].values():
    assert [x for x, _ in arm['curve']] == [8, 16]
    assert arm['command'].startswith('python experiments/learning_curve.py')
  table = (out_dir / 'results.md').read_text()
  assert '| 128x96-flip | 8 | 0.016k |' in table and '| 128x96-light-8k | 8 | 0.016k |' in table
  assert _is_png((out_dir / 'ap.png'))


@pytest.mark.slow
def test_pretraining_resumes_and_ships_a_run_directory_with_its_provenance(tmp_path):
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  common = [sys.executable, str(ROOT / 'experiments/pretrain_synthetic.py'), '--workdir',
            str(tmp_path / 'run'), '--variant', 'nano', '--batch', '4', '--num-train-coco', '8',
            '--num-train-wholebody', '8', '--num-val', '4', '--warmup-steps', '1',
            '--eval-every', '16']
  subprocess.run(common + ['--samples', '16'], check=True, capture_output=True, env=env)
  subprocess.run(common + ['--samples', '32'], check=True, capture_output=True, env=env)
  subprocess.run(common + ['--ship', 'tiny', '--zoo-dir', str(tmp_path / 'zoo'), '--num-test',
                           '4'], check=True, capture_output=True, env=env)
  shipped = tmp_path / 'zoo' / 'tiny'
  record = json.loads((shipped / 'provenance.json').read_text())
  assert len(record['segments']) == 2 and record['step'] in (2, 4)
  assert record['samples_seen'] == record['step'] * 8
  assert record['data']['coco']['test']['seed'] == 1000
  assert record['data']['coco']['train']['seed'] == 0
  assert {'coco/AP', 'wholebody/AP_body'} <= set(record['test_metrics'])
  from vitpose_jax import checkpoint

  model, step = checkpoint.load_model(str(shipped))
  assert step == record['step'] and model.config.task_names == ('coco', 'wholebody')
  assert sorted(os.listdir(shipped / 'checkpoints')) == [str(step)]


@pytest.mark.slow
def test_the_accelerator_run_trains_both_arms_ships_micro_and_tables_their_curves(tmp_path):
  """experiments/pretrain_accelerator.py at --small: data generated first, both arms trained
  side by side, each shipped to the scratch zoo with its test metrics, the table, the archives
  (what comes back from a lent machine) and the plot."""
  require_extra('matplotlib')
  out, runs = tmp_path / 'out', tmp_path / 'runs'
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  script = str(ROOT / 'experiments/pretrain_accelerator.py')
  subprocess.run([sys.executable, script, '--out', str(out), '--workdir', str(runs), '--small',
                  '--source-commit', 'f' * 40], check=True, capture_output=True, env=env)
  results = json.loads((out / 'results.json').read_text())
  assert results['exit_codes'] == {'S': 0, 'micro': 0}
  for name, tasks in (('S', ['coco']), ('micro', ['coco', 'wholebody'])):
    arm = results['arms'][name]
    assert [e['samples_seen'] for e in arm['evals']] == [16, 32]
    assert arm['segments'][0]['commit'] == 'f' * 40 and arm['segments'][0]['dirty'] is None
    assert {f'{t}/AP' for t in tasks} <= set(arm['test_metrics'])
    config = json.loads((runs / name / 'config.json').read_text())
    assert sorted(config['tasks']) == tasks
  assert json.loads((runs / 'S' / 'config.json').read_text())['model']['image_size'] == [64, 48]
  table = (out / 'results.md').read_text()
  assert '| S | test s1000 (best) |' in table and '| micro | test s1000 (best) |' in table
  with tarfile.open(out / 'zoo.tar') as tar:
    names = tar.getnames()
  assert 'micro-adult-v2/provenance.json' in names and 'micro-adult-v2/model.json' in names
  assert not any(n.startswith('S-adult') for n in names)
  with tarfile.open(out / 'runs.tar') as tar:
    assert {'S/evals.jsonl', 'micro/provenance.json'} <= set(tar.getnames())
  subprocess.run([sys.executable, script, '--out', str(out), '--plot'], check=True,
                 capture_output=True)
  assert _is_png(out / 'ap.png')


def test_the_accelerator_arms_share_the_cpus_by_cost_and_are_checked():
  sys.path.insert(0, str(ROOT / 'experiments'))
  try:
    import pretrain_accelerator as acc
  finally:
    sys.path.pop(0)
  assert acc.workers(['S', 'micro'], 16) == {'S': 9, 'micro': 5}
  assert acc.workers(['micro-256', 'S-cosine', 'micro'], 16) == {
      'micro-256': 5, 'S-cosine': 5, 'micro': 3}
  assert acc.workers(['S', 'micro'], 2) == {'S': 1, 'micro': 1}
  args = acc.parse(['--out', 'o', '--workdir', 'w', '--arms', 'micro-256,S-cosine'])
  arms = acc.arms(args)
  assert ' '.join(arms['micro-256']).startswith('--variant micro --batch 32 --lr 1e-3 '
                                                '--image-size 256x192')
  assert 'schedule.kind=cosine' in arms['S-cosine']
  assert acc.ship_names(args) == {'micro-256': 'micro-256-adult', 'S-cosine': 'S-cosine-adult'}
  run = subprocess.run([sys.executable, str(ROOT / 'experiments/pretrain_accelerator.py'),
                        '--out', 'o', '--workdir', 'w', '--arms', 'S,B'],
                       capture_output=True, text=True)
  assert run.returncode == 2 and "--arms 'S,B'" in run.stderr


def test_pretraining_options_are_checked_before_anything_runs(tmp_path):
  script = str(ROOT / 'experiments/pretrain_synthetic.py')
  for bad, message in ((['--tasks', 'coco,infant'], "--tasks 'coco,infant'"),
                       (['--image-size', '128'], "image size '128'"),
                       (['--set', 'lr'], "--set 'lr': expected KEY=VALUE")):
    run = subprocess.run([sys.executable, script, '--workdir', str(tmp_path / 'run'), *bad],
                         capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr, run.stderr
  assert not (tmp_path / 'run').exists()


def test_pretraining_settings_reach_the_config():
  sys.path.insert(0, str(ROOT / 'experiments'))
  try:
    import pretrain_synthetic
  finally:
    sys.path.pop(0)
  parser_args = ['--workdir', 'x', '--tasks', 'coco', '--image-size', '256x192', '--variant', 'S',
                 '--batch', '16', '--samples', '3200', '--eval-every', '800',
                 '--set', 'optimizer.layer_decay=1.0', '--set', 'schedule.kind=cosine']
  args = pretrain_synthetic.parse(parser_args)
  config = pretrain_synthetic.make_config(args)
  assert list(config.tasks) == ['coco'] and tuple(config.model.image_size) == (256, 192)
  assert config.total_steps == 200 and config.eval_every_steps == 50
  assert config.optimizer.layer_decay == 1.0 and config.schedule.kind == 'cosine'
  assert config.checkpoint.best_metric == 'coco/AP'


@pytest.mark.slow
def test_metric_fetch_benchmark_times_both_fetch_intervals_on_one_step():
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/metric_fetch.py'), '--arg',
       'runlocal,variant=nano', '--every', '2', '--steps', '4', '--rounds', '1', '--warmup', '1'],
      check=True, capture_output=True, text=True).stdout
  rates = {int(m[1]): float(m[2]) for m in
           re.finditer(r'metrics fetched every +(\d+) step\(s\): +([\d.]+) steps/s', out)}
  assert set(rates) == {1, 2} and min(rates.values()) > 0
  ratio = float(re.search(r'ratio \(every 2 / every 1\): ([\d.]+)', out)[1])
  assert abs(ratio - rates[2] / rates[1]) < 0.01


@pytest.mark.slow
def test_evaluation_benchmark_scores_alike_on_one_and_two_devices(tmp_path):
  subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/evaluation.py'), '--num', '8', '--batch',
       '4', '--devices', '1,2', '--cache', str(tmp_path / 'cache'), '--out', str(tmp_path)],
      check=True, capture_output=True, text=True)
  runs = json.loads((tmp_path / 'results.json').read_text())['runs']
  assert [r['devices'] for r in runs] == [1, 2]
  for r in runs:
    assert r['instances'] == 8 and r['first_s'] > 0 and r['repeated_s'] > 0
    assert r['first_AP'] == r['repeated_AP'] == r['recompiled_AP'] == runs[0]['first_AP']
