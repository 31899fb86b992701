"""Synthetic datasets in the data cache, and the ``synthetic`` data source.

A spec ``dict(source='synthetic', population=NAME, num=N, seed=0, style='plain')`` (``seed`` and
``style`` optional, these their defaults) resolves, through the source registry
(:mod:`vitpose_jax.data.sources`), to a COCO-format dataset that this module generates into
``$VITPOSE_JAX_CACHE/synthetic/v<GENERATOR_VERSION>/`` on first use: the version is in the path,
so a changed generator never serves stale data, and so is the style, unless it is ``plain``
(whose paths predate styles). Datasets of more than ``SHARD_SIZE``
instances are built from shards generated in parallel processes, each cached on its own; their
annotation files are merged.

While it generates, :func:`generate_datasets` prints what it is doing: one line naming the
datasets, then the instances done every ``interval`` seconds, then the total time.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vitpose_jax.data import packing, sources
from vitpose_jax.data.coco import DataError
from vitpose_jax.synthetic import populations, styles
from vitpose_jax.synthetic.populations import Population
from vitpose_jax.synthetic.styles import Style
from vitpose_jax.synthetic.writer import ANNOTATION_FILE, GENERATOR_VERSION, IMAGE_DIR, generate

# Instances per generated shard. A dataset of at most this many instances is one shard; a larger
# one is the concatenation of shards 0, 1, ... (each cached on its own), so shards generate in
# parallel and a larger dataset reuses every shard of a smaller one.
SHARD_SIZE = 2000
# Seconds between progress lines.
PROGRESS_INTERVAL = 10.

# (population, split, num, seed), or with a style name after the seed; without, the style is plain.
Spec = tuple[str, str, int, int] | tuple[str, str, int, int, str]
Job = tuple[str, str, int, int, int, str]  # (population, split, num, seed, shard, style)


def _root(cache_dir: str | None) -> str:
  return os.path.join(cache_dir or packing.cache_root(), 'synthetic', f'v{GENERATOR_VERSION}')


def _shard_name(population: str, split: str, num: int, seed: int, shard: int,
                style: str = 'plain') -> str:
  # Shard 0 of a large dataset is the small dataset of the same size: one name for both.
  return (f'{population}-' + (f'{style}-' if style != 'plain' else '')
          + f'{split}-n{num}-s{seed}' + (f'-shard{shard}' if shard else ''))


def _shards(num: int) -> list[tuple[int, int]]:
  """(shard index, instances) of a dataset of ``num`` instances."""
  return [(i, min(SHARD_SIZE, num - i * SHARD_SIZE)) for i in range(-(-num // SHARD_SIZE))]


def _check(population: str, num: int, seed: int, style: str = 'plain'):
  if population not in populations.POPULATIONS:
    raise DataError(f'unknown synthetic population {population!r}; '
                    f'known: {", ".join(populations.POPULATIONS)}')
  if style not in styles.STYLES:
    raise DataError(f'unknown synthetic style {style!r}; known: {", ".join(styles.STYLES)}')
  if num < 1 or seed < 0:
    raise DataError(f'synthetic data needs num >= 1 and seed >= 0; got num={num}, seed={seed}')


_COUNTS = None  # a worker process's shared progress counters (set by _init_worker)


def _init_worker(counts):
  global _COUNTS
  _COUNTS = counts


def _generate_shard(population: str | Population, split: str, num: int, seed: int, shard: int,
                    style: str | Style, cache_dir: str | None,
                    progress: Callable[[int], None] | None = None) -> str:
  """The annotation file of one shard, generated into the cache once (atomically: the folder is
  renamed into place when complete, so an interrupted run leaves nothing a reader would use).
  Worker processes get the population's and style's records, so that ones registered in the
  parent work."""
  population = populations.get(population)
  style = styles.get(style)
  root = _root(cache_dir)
  out = os.path.join(root, _shard_name(population.name, split, num, seed, shard, style.name))
  annotations = os.path.join(out, ANNOTATION_FILE)
  if not os.path.isfile(annotations):
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.generating-', dir=root)
    try:
      generate(tmp, population, split, num, seed, shard=shard, style=style, progress=progress)
      try:
        os.rename(tmp, out)
      except OSError:
        if not os.path.isfile(annotations):
          raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process generated it first
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return annotations


def _shard_in_worker(slot: int, population: Population, style: Style, job: Job,
                     cache_dir: str | None):
  """_generate_shard in a worker process, counting its instances in the shared ``slot``."""
  def progress(done: int):
    _COUNTS[slot] = done
  return _generate_shard(population, *job[1:5], style, cache_dir, progress=progress)


def _merge_shards(population: str, split: str, num: int, seed: int, style: str,
                  cache_dir: str | None) -> str:
  """The annotation file of a multi-shard dataset: the shards' files concatenated, image and
  annotation ids renumbered, ``file_name`` relative to the synthetic root."""
  root = _root(cache_dir)
  out = os.path.join(root, _shard_name(population, split, num, seed, 0, style))
  annotations = os.path.join(out, ANNOTATION_FILE)
  if os.path.isfile(annotations):
    return annotations
  images, anns, merged = [], [], None
  for shard, size in _shards(num):
    name = _shard_name(population, split, size, seed, shard, style)
    with open(os.path.join(root, name, ANNOTATION_FILE)) as f:
      data = json.load(f)
    new_id = {}
    for img in data['images']:
      new_id[img['id']] = len(images) + 1
      images.append({**img, 'id': len(images) + 1,
                     'file_name': f'{name}/{IMAGE_DIR}/{img["file_name"]}'})
    for ann in data['annotations']:
      anns.append({**ann, 'id': len(anns) + 1, 'image_id': new_id[ann['image_id']]})
    if merged is None:
      merged = {**data, 'info': {**data['info'], 'shards': len(_shards(num))}}
  merged.update(images=images, annotations=anns)
  os.makedirs(out, exist_ok=True)
  tmp = annotations + f'.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(merged, f, separators=(',', ':'))
  os.replace(tmp, annotations)
  return annotations


def _say(text: str):
  print(f'synthetic data: {text}', file=sys.stdout, flush=True)


def _full(spec: Spec) -> tuple[str, str, int, int, str]:
  return (*spec, 'plain') if len(spec) == 4 else tuple(spec)


def generate_datasets(specs: Sequence[Spec], *, cache_dir: str | None = None,
                      workers: int | None = None, interval: float = PROGRESS_INTERVAL):
  """Generates the synthetic datasets (population, split, num, seed[, style]) missing from the
  cache, in parallel processes (one job per shard, ``workers`` at a time, default one per CPU),
  printing progress; nothing is printed when all are cached. DataError on a bad spec."""
  specs = [_full(spec) for spec in specs]
  jobs = []
  for population, split, num, seed, style in dict.fromkeys(specs):
    _check(population, num, seed, style)
    jobs += [(population, split, size, seed, shard, style) for shard, size in _shards(num)]
  root = _root(cache_dir)
  missing = [j for j in dict.fromkeys(jobs) if not os.path.isfile(
      os.path.join(root, _shard_name(*j), ANNOTATION_FILE))]
  if missing:
    _generate_jobs(missing, cache_dir, workers, interval)
  for population, split, num, seed, style in dict.fromkeys(specs):
    dataset(population, split, num, seed, cache_dir=cache_dir, style=style)


def _generate_jobs(jobs: list[Job], cache_dir: str | None, workers: int | None, interval: float):
  workers = min(len(jobs), workers or os.cpu_count() or 1)
  total = sum(job[2] for job in jobs)
  sizes: dict[tuple[str, str], int] = {}
  for population, split, num, _, _, style in jobs:
    name = population if style == 'plain' else f'{population} ({style})'
    sizes[name, split] = sizes.get((name, split), 0) + num
  _say(f'generating {total} instances ({", ".join(f"{p} {s} {n}" for (p, s), n in sizes.items())})'
       f' into {_root(cache_dir)}, {workers} worker{"s" if workers > 1 else ""}')
  start = last = time.monotonic()
  said = 0

  def report(done: int):
    nonlocal last, said
    now = time.monotonic()
    if now - last >= interval and done != said:
      last, said = now, done
      _say(f'{done}/{total} instances ({now - start:.0f} s)')

  if workers <= 1:
    finished = 0
    for job in jobs:
      _generate_shard(*job, cache_dir, progress=lambda done: report(finished + done))
      finished += job[2]
  else:
    # spawn, not fork: the parent may already hold JAX's threads, which fork does not survive.
    context = multiprocessing.get_context('spawn')
    counts = context.Array('q', len(jobs), lock=False)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                initializer=_init_worker,
                                                initargs=(counts,)) as pool:
      futures = [pool.submit(_shard_in_worker, slot, populations.get(job[0]),
                             styles.get(job[5]), job, cache_dir)
                 for slot, job in enumerate(jobs)]
      pending = futures
      while pending:
        _, pending = concurrent.futures.wait(
            pending, timeout=max(interval, 0.1), return_when=concurrent.futures.FIRST_EXCEPTION)
        if any(f.done() and f.exception() for f in futures):
          break
        report(sum(counts))
      for future in futures:
        future.result()
  _say(f'{total} instances generated in {time.monotonic() - start:.0f} s')


def dataset(population: str, split: str, num: int, seed: int = 0,
            cache_dir: str | None = None, *, style: str = 'plain') -> tuple[str, str]:
  """(annotations JSON, image folder) of a synthetic dataset drawn in ``style``, generated into
  the cache once. DataError on an unknown population or style or a bad num or seed."""
  _check(population, num, seed, style)
  root = _root(cache_dir)
  jobs = [(population, split, size, seed, shard, style) for shard, size in _shards(num)]
  missing = [j for j in jobs
             if not os.path.isfile(os.path.join(root, _shard_name(*j), ANNOTATION_FILE))]
  if missing:
    _generate_jobs(missing, cache_dir, 1, PROGRESS_INTERVAL)
  if num <= SHARD_SIZE:
    annotations = os.path.join(root, _shard_name(population, split, num, seed, 0, style),
                               ANNOTATION_FILE)
    return annotations, os.path.join(os.path.dirname(annotations), IMAGE_DIR)
  return _merge_shards(population, split, num, seed, style, cache_dir), root


def _spec(spec: Mapping[str, Any], split: str) -> Spec:
  return (spec['population'], split, int(spec['num']), int(spec.get('seed', 0)),
          spec.get('style', 'plain'))


def _files(spec: Mapping[str, Any], split: str, cache_dir: str | None) -> tuple[str, str]:
  population, split, num, seed, style = _spec(spec, split)
  return dataset(population, split, num, seed, cache_dir=cache_dir, style=style)


def _prepare(specs: Sequence[tuple[Mapping[str, Any], str]], cache_dir: str | None):
  generate_datasets([_spec(spec, split) for spec, split in specs], cache_dir=cache_dir)


SOURCE = sources.register(sources.SourceKind(
    name='synthetic', required=('population', 'num'), optional=('seed', 'style'), files=_files,
    prepare=_prepare))
