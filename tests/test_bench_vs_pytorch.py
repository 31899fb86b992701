"""experiments/bench/vs_pytorch.py runs end to end at --small size (the numbers are not checked:
tiny shapes on a shared CPU say nothing about speed)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import require_extra

ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.slow
def test_vs_pytorch_small_reports_every_ratio_and_goal(tmp_path):
  require_extra('torch')
  require_extra('transformers')
  env = {**os.environ, 'VITPOSE_JAX_CACHE': str(tmp_path / 'cache')}
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/vs_pytorch.py'), '--small', '--iters', '1',
       '--out', str(tmp_path / 'results')],
      check=True, capture_output=True, text=True, env=env).stdout
  for part in ('(a) inference', '(b) training step', '(c) forward MFU', '(d) 4-task step',
               '(e) demo config'):
    assert part in out
  assert out.count('ratio ') == 4
  results = json.loads((tmp_path / 'results' / 'results_small.json').read_text())
  assert set(results['goals']) == {
      'inference vs torch', 'training step vs torch', 'forward MFU (analytic FLOPs)',
      'factorized / plain step', 'real pipeline / in-memory step'}
  for goal in results['goals'].values():
    assert goal['value'] > 0 and isinstance(goal['met'], bool)
    assert ('MET' if goal['met'] else 'MISSED') in out
