"""Every notebook under colab/ runs top to bottom (shell and magic lines are Colab setup)."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / 'colab').glob('*.ipynb'))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  cells = json.loads(path.read_text())['cells']
  namespace = {'__name__': '__main__'}
  for i, cell in enumerate(c for c in cells if c['cell_type'] == 'code'):
    source = ''.join(
        line for line in cell['source'] if not line.lstrip().startswith(('!', '%', '# !', '# %')))
    exec(compile(source, f'{path.name}[code cell {i}]', 'exec'), namespace)
