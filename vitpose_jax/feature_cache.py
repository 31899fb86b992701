"""Frozen-backbone features computed once: heads-only training without the backbone's cost.

When only the heads train (``config.trainable = 'heads'``) the backbone is a fixed function, and
with augmentation off every training crop of an instance is the same image. Its feature map is
then the same at every epoch: :func:`build` runs the backbone over each task's training source
once, in inference mode, and the training step takes each sample's feature map from the cache by
its ``source_index`` (which :class:`IndexedSource` adds to every record) instead of running the
backbone. The heads see exactly what the backbone would give them (the uncached step runs a
frozen backbone in inference mode too), so the two paths train the same model.

The cache holds ``N · rows · cols · width`` values per task in the model's dtype, replicated on
every device (a 0.3B backbone at 256×192, 16×12 tokens of width 1024: 0.79 MB per instance in
float32). It lives in memory and is rebuilt when a run resumes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx
from jax.experimental import multihost_utils

from vitpose_jax import models
from vitpose_jax.data import transforms

MODES = ('auto', 'on', 'off')


class IndexedSource:
  """``source`` whose records also carry ``'source_index'``: their index in it (int32)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {**self._source[index], 'source_index': np.int32(index)}


def unusable_because(config, augment: transforms.AugmentConfig, *, adaptation=None,
                     teacher: bool = False, knowledge_tokens: bool = False) -> str | None:
  """Why a run cannot train from cached features (None when it can): the backbone must be frozen
  and run once per instance, so only heads train, every augmentation is off, and no adaptation
  method, teacher or knowledge token needs the images or the backbone's tokens in the step."""
  trainable = config.get('trainable', 'all')
  if trainable != 'heads':
    return f"config.trainable is {trainable!r} (the cache needs 'heads': a frozen backbone)"
  if not augment.deterministic:
    return ('config.data.augment has random steps on (each epoch would see other crops; '
            'configs/finetune.py:augment=none turns them off)')
  if adaptation is not None:
    return 'config.adapt.method needs the images in every step'
  if teacher:
    return 'a distillation teacher reads the images in every step'
  if knowledge_tokens:
    return 'knowledge tokens enter the backbone'
  return None


def resolve(config, augment: transforms.AugmentConfig, **reasons) -> bool:
  """Whether the run trains from cached features: ``config.feature_cache`` 'on' (ValueError
  saying why when it cannot), 'off', or 'auto' (the default: whenever it can). ``reasons``: as
  :func:`unusable_because` takes them."""
  mode = config.get('feature_cache', 'auto')
  if mode not in MODES:
    raise ValueError(f'config.feature_cache {mode!r} is not one of {", ".join(MODES)}')
  why = unusable_because(config, augment, **reasons)
  if mode == 'on' and why:
    raise ValueError(f'config.feature_cache is "on" but {why}')
  if mode == 'auto' and why:
    logging.info('feature cache off: %s', why)
    if config.get('trainable', 'all') == 'heads':
      # A heads-only run is where a cache is expected: say why this one has none.
      print(f'feature cache off: {why}', flush=True)
  return mode != 'off' and why is None


def nbytes(mcfg: models.ModelConfig, instances: int) -> int:
  """Bytes of one device's cache of ``instances`` feature maps of the model ``mcfg``."""
  rows, cols = mcfg.grid_size
  return instances * rows * cols * mcfg.width * jnp.dtype(mcfg.dtype).itemsize


def budget(devices) -> int:
  """Bytes a cache may take on each of ``devices`` (this process's): half of an accelerator's
  memory (the rest is the step's), or on CPU devices, which share the host's memory, half of it
  over their count."""
  stats = devices[0].memory_stats() or {}
  if stats.get('bytes_limit'):
    return stats['bytes_limit'] // 2
  host = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  return host // 2 // len(devices)


def fits(config, mcfg: models.ModelConfig, instances: int, devices) -> bool:
  """Whether a cache of ``instances`` fits :func:`budget`. When it does not, 'auto' trains
  without it (and says so) and 'on' is a ValueError naming both sizes."""
  need, have = nbytes(mcfg, instances), budget(devices)
  if need <= have:
    return True
  why = (f'the feature cache of {instances} instances needs {need / 1e9:.1f} GB on each device, '
         f'over its budget of {have / 1e9:.1f} GB (half the memory)')
  if config.get('feature_cache', 'auto') == 'on':
    raise ValueError(f'config.feature_cache is "on" but {why}; use fewer instances or '
                     'feature_cache="off"')
  logging.warning('feature cache off: %s', why)
  print(f'feature cache off: {why}', flush=True)
  return False


def build(model: models.VitPose, tasks: Mapping[str, tuple[Any, str, list, int]], *,
          sharded: jax.sharding.Sharding,
          replicated: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """``{stream: (N, rows, cols, width)}``: the frozen backbone's feature map of every instance of
  each training stream, at its index, as a global array with sharding ``replicated``.

  ``tasks``: ``{stream: (source, model task, train transforms, batch size)}``; the transforms
  must be deterministic (augmentation off) so that they give the crop training sees. Batches of
  the whole source are split over the devices of ``sharded`` (the batch size divisible by their
  count, and by the processes'); every process ends with the whole cache.
  """
  graphdef, state = nnx.split(model)
  out = {}
  rank, processes = jax.process_index(), jax.process_count()
  for stream, (source, model_task, steps, batch_size) in tasks.items():
    start = time.perf_counter()
    run = jax.jit(lambda state, images, t=model_task: nnx.merge(graphdef, state).feature_maps(
        {t: images})[t], out_shardings=sharded)
    ds = grain.MapDataset.source(source).seed(0).apply(list(steps))
    local = batch_size // processes
    parts = []
    for begin in range(0, len(ds), batch_size):
      indices = list(range(begin, min(begin + batch_size, len(ds))))
      valid = len(indices)
      # One shape for the compiled program: the last batch is padded by repeating its last crop.
      indices += [indices[-1]] * (batch_size - valid)
      images = np.stack([ds[i]['image'] for i in indices[rank * local:(rank + 1) * local]])
      fmap = run(state, jax.make_array_from_process_local_data(sharded, images))
      parts.append(np.asarray(multihost_utils.process_allgather(fmap, tiled=True))[:valid])
    cache = np.concatenate(parts)
    out[stream] = jax.make_array_from_process_local_data(replicated, cache)
    logging.info('feature cache %s: %d instances × %s %s (%.0f MB) in %.1f s', stream,
                 cache.shape[0], '×'.join(map(str, cache.shape[1:])), cache.dtype,
                 cache.nbytes / 1e6, time.perf_counter() - start)
    print(f'feature cache {stream}: {cache.shape[0]} instances, {cache.nbytes / 1e6:.0f} MB, '
          f'built in {time.perf_counter() - start:.1f} s', flush=True)
  return out
