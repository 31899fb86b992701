"""Every notebook under colab/ runs top to bottom in a Jupyter kernel, at its smallest size.

The smallest sizes are injected as a cell right after the notebook's ``parameters`` cell, as
papermill does, so the notebook's own defaults (a few minutes of CPU training) stay what a user
runs. Each kernel runs in a temporary directory with this module's synthetic-data cache.
"""

import ast
import importlib.util
import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

COLAB = pathlib.Path(__file__).parent.parent / 'colab'
NOTEBOOKS = sorted(COLAB.glob('*.ipynb'))

# A few training steps of the smallest variant on a handful of instances: enough to run every
# cell, nothing more. The sizes agree across notebooks so that they share the packed data.
_TINY = dict(BATCH=2, NUM_TRAIN=8, NUM_VAL=4, LOG_EVERY=1)
SMALLEST = {
    '01_schemas_and_model.ipynb': dict(VARIANT='nano'),
    # 02 and 03 start from the shipped model at every size, as a user's run does.
    '02_quickstart.ipynb': dict(_TINY, TASKS='coco+infant', STEPS=2, SHOW=1),
    '03_finetune_new_schema.ipynb': dict(_TINY, STEPS=2, SHOW=1),
    '04_distillation.ipynb': dict(
        _TINY, TEACHER_VARIANT='nano', TASKS='infant', TEACHER_IMAGE_SIZE=(64, 48),
        TEACHER_STEPS=2, TOKEN_STEPS=2, STUDENT_STEPS=2),
    '05_adapt_population.ipynb': dict(_TINY, STEPS=2, SHOW=1),
}
CELL_TIMEOUT = 300  # seconds; the slowest cell at the smallest sizes (4 student runs) takes ~1 min
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def _read(path):
  return nbformat.read(path, as_version=4)


def _code(nb):
  return [c for c in nb.cells if c.cell_type == 'code']


def _parameters_index(nb):
  found = [i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', [])]
  assert len(found) == 1, f'{len(found)} cells tagged "parameters"; a notebook needs exactly one'
  return found[0]


def test_every_notebook_has_its_smallest_sizes():
  assert NOTEBOOKS
  assert sorted(SMALLEST) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
  nb = _read(path)
  nbformat.validate(nb)
  cells = _code(nb)
  assert "REPO_URL = ''" in cells[0].source, 'the first code cell installs, from REPO_URL'
  parameters = nb.cells[_parameters_index(nb)]
  assigned = {t.id for node in ast.parse(parameters.source).body
              for t in getattr(node, 'targets', []) if isinstance(t, ast.Name)}
  # An injected name the notebook does not define would leave the default size in force.
  assert set(SMALLEST[path.name]) <= assigned, set(SMALLEST[path.name]) - assigned
  for cell in cells:
    # Outputs are not committed; setup is the Python install cell, not shell lines, so what this
    # test runs is what a user runs.
    assert not cell.outputs and cell.execution_count is None, f'{path.name}: outputs committed'
    shell = [line for line in cell.source.splitlines() if line.lstrip().startswith(('!', '%'))]
    assert not shell, f'{path.name}: shell or magic lines {shell}'
    assert all(len(line) <= 100 for line in cell.source.splitlines())


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_asks_for_the_repository_url(path, monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'vitpose_jax' else find_spec(name, *a))
  with pytest.raises(RuntimeError, match='set REPO_URL'):
    exec(compile(_code(_read(path))[0].source, f'{path.name}[install]', 'exec'), {})


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, cache, tmp_path):
  nb = _read(path)
  source = '\n'.join(f'{k} = {v!r}' for k, v in SMALLEST[path.name].items())
  nb.cells.insert(_parameters_index(nb) + 1, nbformat.v4.new_code_cell(
      source, metadata={'tags': ['injected-parameters']}))
  client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}})
  try:
    # The kernel is a subprocess: the caches reach it through its environment. JAX's compilation
    # cache lets runs of one model (a teacher and its student alone, say) compile once.
    client.execute(env={**os.environ, 'VITPOSE_JAX_CACHE': cache,
                        'JAX_COMPILATION_CACHE_DIR': os.path.join(cache, 'jax')})
  except CellExecutionError as e:
    pytest.fail(f'{path.name}: {_ANSI.sub("", str(e))}', pytrace=False)
