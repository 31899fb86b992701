"""experiments/bench/frozen_backbone.py at --small size: an imported Sapiens-shaped model trains
its heads with and without cached features, the same losses step for step, the backbone
untouched (the timings are not checked; tests never time)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.slow
def test_frozen_backbone_bench_small(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / 'experiments/bench/frozen_backbone.py'), '--small',
       '--steps', '3', '--out', str(tmp_path)],
      check=True, capture_output=True, text=True, cwd=tmp_path).stdout
  results = json.loads((tmp_path / 'results_small.json').read_text())
  cached, uncached = results['cached'], results['uncached']
  assert cached['backbone_bitwise_unchanged'] and uncached['backbone_bitwise_unchanged']
  assert cached['cache_build_s'] > 0 and uncached['cache_build_s'] is None
  assert len(cached['losses']) == 3
  assert cached['losses'] == pytest.approx(uncached['losses'], rel=1e-4)
  assert 'per step: uncached' in out and 'backbone bit for bit unchanged: cached True' in out
  assert 'the same loss at every step: True' in out
