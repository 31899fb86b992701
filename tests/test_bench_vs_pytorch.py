"""experiments/bench/vs_pytorch.py runs end to end at --small size (the numbers are not checked:
tiny shapes on a shared CPU say nothing about speed)."""

import importlib.util
import json
import os
import pathlib
import re
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
  for name, goal in results['goals'].items():
    assert goal['value'] > 0
    assert goal['met'] == (goal['value'] >= goal['bound'] if goal['kind'] == 'min'
                           else goal['value'] <= goal['bound'])
    # The goal's own printed line carries the JSON's verdict (not merely some line).
    assert _printed_verdicts(out, name) == ['MET' if goal['met'] else 'MISSED'], name


def _printed_verdicts(out: str, goal: str) -> list[str]:
  return re.findall(rf'^  {re.escape(goal)} +\S+  goal [<>]= \S+ +(MET|MISSED)$', out, re.M)


def test_goals_judge_each_ratio_against_its_own_bound_and_direction(capsys):
  spec = importlib.util.spec_from_file_location('vs_pytorch',
                                                ROOT / 'experiments/bench/vs_pytorch.py')
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  goals = bench.goals({'inference': {'speedup_best': 1.6}, 'train_step': {'speedup_best': 1.4},
                       'factorized': {'ratio_best': 1.02}, 'pipeline': {'ratio_best': 1.2}})
  assert {name: g['met'] for name, g in goals.items()} == {
      'inference vs torch': True, 'training step vs torch': False,
      'factorized / plain step': True, 'real pipeline / in-memory step': False}
  out = capsys.readouterr().out
  assert '  inference vs torch                 1.600  goal >= 1.5    MET' in out.splitlines()
  assert {name: _printed_verdicts(out, name) for name in goals} == {
      'inference vs torch': ['MET'], 'training step vs torch': ['MISSED'],
      'factorized / plain step': ['MET'], 'real pipeline / in-memory step': ['MISSED']}
