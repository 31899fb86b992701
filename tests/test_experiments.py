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
