"""experiments/bench/accelerator.py runs end to end at --small size on any backend (the numbers
are not checked: on this CPU they say nothing about an accelerator)."""

import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.slow
def test_accelerator_bench_small_reports_every_arm(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/accelerator.py'), '--small', '--iters', '1',
       '--warmup', '0', '--out', str(tmp_path)],
      check=True, capture_output=True, text=True).stdout
  results = json.loads((tmp_path / 'results_small.json').read_text())
  assert set(results['inference']) == {'bfloat16', 'float32'}
  for dtype in ('bfloat16', 'float32'):
    assert set(results['inference'][dtype]) == {'predictor', 'network'}
  training = results['training']
  assert training['factorized_over_plain'] > 0
  for arm in ('ViTPose single task', 'ViTPose++ 4 tasks, factorized',
              'ViTPose++ 4 tasks, plain MLP'):
    assert training[arm]['best_s'] > 0 and arm in out
  # The torch reference runs where torch sees a CUDA device, and says why it did not elsewhere.
  if importlib.util.find_spec('torch') is None or importlib.util.find_spec('transformers') is None:
    assert '(c) skipped: torch or transformers is not installed' in out.splitlines()
    assert 'torch' not in results
  elif not importlib.import_module('torch').cuda.is_available():
    assert '(c) skipped: torch sees no CUDA device' in out.splitlines()
    assert 'torch' not in results
  else:
    assert results['torch']['inference_bf16']['best_s'] > 0
