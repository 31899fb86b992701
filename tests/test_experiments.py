"""Benchmark scripts keep running (a tiny configuration; the numbers themselves are not checked)."""

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
