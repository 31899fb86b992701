"""Benchmark scripts keep running (a tiny configuration; the numbers themselves are not checked)."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


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
  assert (out_dir / 'ap.png').stat().st_size > 0
  results = json.loads((out_dir / 'results.json').read_text())
  assert len(results['per_seed']['+ both']) == 1
  assert set(results['table']['+ both']) == {'coco', 'infant', 'mean'}
