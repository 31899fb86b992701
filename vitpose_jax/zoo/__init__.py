"""Shipped models: run directories inside the package, opened as ``zoo:<name>``.

A shipped model is a run directory (``model.json``, one checkpoint holding only the network,
``config.json`` of the run that trained it) plus ``provenance.json``: the command, commit, data
specs and seeds, steps, samples seen, wall time, device and test metrics of the run that made
it. ``zoo:<name>`` is accepted wherever a run directory is (``--config.init_from``, ``predict``,
``evaluate``, ``convert``, :meth:`vitpose_jax.predict.Predictor.from_run`)::

    python -m vitpose_jax.zoo                      # one line per shipped model
    python -m vitpose_jax.evaluate --workdir zoo:micro-adult --task coco --synthetic adult \\
        --num 200 --seed 1000

Shipped weights come only from this project's own recipe (``experiments/pretrain_synthetic.py``)
and are never edited by hand.
"""

from __future__ import annotations

import json
import os
from typing import Any

PREFIX = 'zoo:'
ZOO_DIR = os.path.dirname(os.path.abspath(__file__))
PROVENANCE = 'provenance.json'


class ZooError(ValueError):
  """An unknown shipped model; the message lists the known ones."""


def names() -> list[str]:
  """The shipped models' names, sorted."""
  return sorted(n for n in os.listdir(ZOO_DIR)
                if os.path.isfile(os.path.join(ZOO_DIR, n, PROVENANCE)))


def resolve(path: str | os.PathLike[str]) -> str:
  """The run directory ``path`` names: ``zoo:<name>`` → the shipped model's folder inside the
  package; any other path unchanged. Raises ZooError for an unknown name."""
  path = os.fspath(path)
  if not path.startswith(PREFIX):
    return path
  name = path[len(PREFIX):]
  if name not in names():
    raise ZooError(f'{path}: no such shipped model (shipped: {", ".join(names()) or "none"}; '
                   '`python -m vitpose_jax.zoo` lists them)')
  return os.path.join(ZOO_DIR, name)


def provenance(name: str) -> dict[str, Any]:
  """The provenance record of a shipped model (see the module docstring)."""
  with open(os.path.join(resolve(PREFIX + name), PROVENANCE)) as f:
    return json.load(f)


def size_bytes(name: str) -> int:
  """Bytes on disk of a shipped model's folder."""
  total = 0
  for root, _, files in os.walk(resolve(PREFIX + name)):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total
