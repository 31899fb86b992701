"""Shared test helpers: tiny models with non-trivial weights."""

import importlib
import os

import jax
import pytest
from flax import nnx

from vitpose_jax import models

FOUR_TASKS = {'coco': 'coco17', 'wholebody': 'coco_wholebody133', 'infant': 'infant_smil25',
              'wheelchair': 'wheelchair23'}
SMALL_IMAGE = (64, 48)


def randomize(model: nnx.Module, seed: int = 0, scale: float = 0.2) -> nnx.Module:
  """Replaces every parameter and BatchNorm mean with N(0, scale²) noise and every BatchNorm
  variance with U(0.5, 1.5), so equivalence tests compare outputs of a realistic magnitude rather
  than the near-zero heatmaps of a fresh init."""
  state = nnx.state(model)
  keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))

  def draw(path, x):
    if 'var' in path[-2:]:
      return jax.random.uniform(next(keys), x.shape, x.dtype, 0.5, 1.5)
    return scale * jax.random.normal(next(keys), x.shape, x.dtype)

  nnx.update(model, jax.tree_util.tree_map_with_path(
      lambda path, x: draw([getattr(p, 'key', getattr(p, 'name', None)) for p in path], x),
      state))
  return model


@pytest.fixture
def images():
  def make(counts, size=SMALL_IMAGE, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(counts))
    return {t: jax.random.normal(k, (n, *size, 3)) for k, (t, n) in zip(keys, counts.items())}
  return make


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A module's own synthetic-data cache (VITPOSE_JAX_CACHE), restored afterwards."""
  path = str(tmp_path_factory.mktemp('cache'))
  old = os.environ.get('VITPOSE_JAX_CACHE')
  os.environ['VITPOSE_JAX_CACHE'] = path
  yield path
  if old is None:
    del os.environ['VITPOSE_JAX_CACHE']
  else:
    os.environ['VITPOSE_JAX_CACHE'] = old


def tiny_config(tasks=FOUR_TASKS, **kw):
  kw.setdefault('image_size', SMALL_IMAGE)
  return models.model_config('nano', tasks, **kw)


def require_extra(module: str):
  """Imports an optional-extra module for a parity test: skips without it, except under CI=true
  where a missing extra is a failure (CI installs every extra README lists)."""
  if os.environ.get('CI') == 'true':
    return importlib.import_module(module)
  return pytest.importorskip(module)
