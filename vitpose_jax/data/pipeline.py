"""The multi-task input pipeline: one source per task, mixed so every batch holds each task's share.

Each global batch is a dict keyed by task name (docs/design.md); task ``t`` contributes exactly its
configured ``batch_size`` samples (its global share), so every array has a static shape. Each host
reads a disjoint shard of every task's source and produces ``batch_size / process_count`` of them.

Per task: source → shard → shuffle (reshuffled every epoch of that task) → repeat → transforms
(random ones seeded per element and epoch) → batch. The tasks' streams are zipped index by index
into one grain ``MapDataset``, so a single ``DatasetIterator`` carries the whole state: saving it
with the train state and restoring it reproduces the next batch exactly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from vitpose_jax.data import packing, sources
from vitpose_jax.data.coco import DataError
from vitpose_jax.skeletons import Schema


@dataclasses.dataclass(frozen=True)
class TaskData:
  """One task's input: its schema, a random-access source of instances, its global batch share."""

  name: str
  schema: Schema
  source: Any  # len() and __getitem__ → instance dict (see vitpose_jax.data.coco.read_coco)
  batch_size: int
  transforms: tuple = ()  # grain Map / RandomMap transforms, applied in order


def open_source(spec: Mapping[str, Any], schema: Schema, *, split: str = 'train',
                strict: bool = False, cache_dir: str | None = None):
  """The random-access source of a data spec (docs/design.md): its COCO-format files, found through
  the source registry (:mod:`vitpose_jax.data.sources`: ``coco``, ``synthetic``, ...) and packed
  into the cache on first use; a spec with ``labels=False`` (:func:`sources.has_labels`) gives
  instances with zero keypoints and visibilities. DataError on a bad spec or bad files."""
  annotations, images = sources.files(spec, split, cache_dir=cache_dir)
  try:
    packed = packing.packed_coco(annotations, images, schema, split=split, strict=strict,
                                 labels=sources.has_labels(spec), cache_dir=cache_dir)
  except DataError as e:
    if 'subset' not in spec:
      raise
    # The part is a file in the cache; the user knows the file it was cut from.
    original, _ = sources.files({k: v for k, v in spec.items() if k != 'subset'}, split,
                                cache_dir=cache_dir)
    raise DataError(str(e).replace(
        annotations, f'{original} (subset {tuple(spec["subset"])})')) from None
  return packed.source(split)


def _task_seed(seed: int, task: str) -> int:
  # Keyed by name, not position: adding a task leaves the other tasks' streams unchanged.
  return int(np.random.SeedSequence([seed, zlib.crc32(task.encode())]).generate_state(1)[0])


class _ZipTasks(grain.MapDataset):
  """Element i = {task: element i of that task's batched stream}."""

  def __init__(self, streams: Mapping[str, grain.MapDataset]):
    super().__init__(list(streams.values()))
    self._names = list(streams)

  def __len__(self) -> int:
    return min(len(p) for p in self.parents)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return {name: parent[index] for name, parent in zip(self._names, self.parents)}

  def __str__(self) -> str:
    return f'ZipTasks({", ".join(self._names)})'


class _LocalPart(grain.MapDataset):
  """This host's part of every global batch: local element j is global element
  (j // local) · global_batch + offset + j % local."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, local: int, offset: int):
    super().__init__(parent)
    self._global, self._local, self._offset = global_batch, local, offset

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, j = divmod(index, self._local)
    return self._parent[step * self._global + self._offset + j]

  def __str__(self) -> str:
    return f'LocalPart(offset={self._offset}, local={self._local}, global={self._global})'


def train_dataset(tasks: Sequence[TaskData], *, seed: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """The infinite training stream of this host: element i is global batch i's local part.

  Every host walks the same shuffled global stream and takes its own slice of each global batch,
  so the global batches (and with them the losses) do not depend on how many hosts share them.
  A task's n samples come stacked per key as the transforms leave them: after the crop ``image``
  uint8 (n, H, W, 3), ``keypoints`` float32 (n, K, 2) in crop pixels, ``keypoints_visible`` and
  ``keypoint_weights`` float32 (n, K), the crop's ``center``, ``scale`` and ``rotation``, and the
  record's other keys (docs/design.md, *Batches*).
  """
  streams = {}
  for task in tasks:
    if task.batch_size % process_count:
      raise DataError(f'task {task.name!r}: batch_size {task.batch_size} is not divisible by '
                      f'the {process_count} processes')
    ds = grain.MapDataset.source(task.source).seed(_task_seed(seed, task.name))
    ds = ds.shuffle().repeat()
    ds = ds.apply(list(task.transforms)) if task.transforms else ds
    local = task.batch_size // process_count
    ds = _LocalPart(ds, task.batch_size, local, process_index * local)
    streams[task.name] = ds.batch(local, drop_remainder=True)
  return _ZipTasks(streams)


def _lower_priority(thread: int, priority: int | str) -> None:
  """Lowers one thread's CPU priority (Linux) to ``priority``: a nice value, or 'idle'."""
  if priority == 'idle':
    if os.sched_getscheduler(thread) != os.SCHED_IDLE:
      os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
  elif os.getpriority(os.PRIO_PROCESS, thread) < priority:
    os.setpriority(os.PRIO_PROCESS, thread, priority)


class _LowPriority(grain.MapDataset):
  """The parent, built by threads that first lower their own CPU priority to ``priority``."""

  def __init__(self, parent: grain.MapDataset, priority: int | str):
    super().__init__(parent)
    self._priority = priority

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    # Linux keeps the scheduling policy and nice value per thread. The main thread may build
    # elements itself (no prefetch threads) and runs the training loop: it keeps its own.
    if threading.current_thread() is not threading.main_thread():
      _lower_priority(threading.get_native_id(), self._priority)
    return self._parent[index]

  def __str__(self) -> str:
    return f'LowPriority({self._priority})'


def _check_priority(priority: int | str) -> int | str:
  """A builder priority as make_iterator takes it: 'idle', or a nice value 0..19 given as an int
  or a string of digits (config files and command-line overrides keep the field a string)."""
  value = priority
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if value == 'idle' or (isinstance(value, int) and not isinstance(value, bool)
                         and 0 <= value <= 19):
    return value
  raise DataError(f"data.builder_priority {priority!r} must be 'idle' or a nice value 0..19")


def make_iterator(dataset: grain.MapDataset, *, num_workers: int = 0, num_threads: int = 2,
                  prefetch_batches: int = 4, priority: int | str = 10) -> grain.DatasetIterator:
  """A checkpointable iterator (``get_state`` / ``set_state``) over whole batches.

  ``num_threads`` batches are built concurrently in each process (the main one, or each of
  ``num_workers`` worker processes) and at most ``prefetch_batches`` wait per process. grain's
  defaults (16 threads, 500 elements) are sized for small records; an element here is a whole
  multi-task batch (tens of MB), so they would hold gigabytes.

  The threads that build batches run at a lower CPU priority (Linux): a nice value 1..19 (an
  int or a string of digits), 'idle' (SCHED_IDLE: they run only on cores nothing else wants),
  or 0 to leave them be. Where the host's cores also run the model (XLA:CPU), batches are then
  built more in the gaps of the step's compute and less by preempting it, which stalls every
  compute thread of a parallel op. On the 2-core demo nice 10 gave a pipeline / in-memory
  step-time ratio 0 to 0.02 lower than 0, and 19 did not starve the step; 'idle' against 10 in
  alternating runs (1.01, 1.04, 1.08 against 1.07, 1.01) was within that machine's noise. On a
  host whose cores other jobs keep busy, 'idle' builders get only what those jobs leave. In a
  container the nice value only ranks threads within it.
  """
  priority = _check_priority(priority)
  if priority and sys.platform == 'linux':
    dataset = _LowPriority(dataset, priority)
  ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch_batches))
  if num_workers > 0:
    from absl import flags

    # grain's worker processes read absl flags; outside absl.app.run (tests, Colab, scripts)
    # nothing has parsed them and the workers fail on start.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=prefetch_batches))
  return iter(ds)


def eval_batches(source, transforms: Sequence, batch_size: int) -> Iterator[tuple[dict, int]]:
  """The whole ``source`` once, in order, as (batch, n_valid) with every batch ``batch_size``
  long: the last one is padded by repeating its final element, so a jitted model sees one shape
  and the caller keeps the first ``n_valid`` results."""
  ds = grain.MapDataset.source(source)
  ds = ds.apply(list(transforms)) if transforms else ds
  for start in range(0, len(ds), batch_size):
    elements = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
    valid = len(elements)
    elements += [elements[-1]] * (batch_size - valid)
    yield {k: np.stack([e[k] for e in elements]) for k in elements[0]}, valid
