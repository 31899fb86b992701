"""Config helpers in the big_vision style: ``--config=configs/x.py:variant=B,runlocal``."""

from __future__ import annotations

import importlib.util
import os
import types
from collections.abc import Iterable
from typing import Any

import ml_collections
from ml_collections import config_dict

from vitpose_jax.optim import DURATION_TYPES


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``"k=v,flag"`` into a locked ConfigDict of ``defaults``' keys and types.

  A bare ``flag`` means True; values are converted to the default's type; an unknown key is an
  error naming the known ones, so a mistyped argument cannot pass silently.
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'unknown config argument {key!r}; known: {", ".join(defaults)}')
    default = defaults[key]
    if not _:
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {key}={value!r} is not a boolean')
      out[key] = value.lower() in ('true', '1')
    elif default is None:
      out[key] = value
    else:
      try:
        out[key] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {key}={value!r} is not a {type(default).__name__}'
                         ) from None
  config = ml_collections.ConfigDict(out)
  config.lock()
  return config


def sibling_config(config_file: str, name: str) -> types.ModuleType:
  """The config module ``name``.py beside ``config_file`` (config files are loaded by path, not
  imported as a package, so one builds on another this way)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'vitpose_jax_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def set_duration(config: ml_collections.ConfigDict, prefix: str = 'total',
                 **unit: int | float) -> ml_collections.ConfigDict:
  """Sets the duration ``{prefix}_{unit}`` to the one ``steps=``, ``epochs=`` or ``examples=``
  given, in place, and empties the other two units; returns ``config``.

  Every unit becomes a typed placeholder (``ml_collections.config_dict.placeholder``: int steps
  and examples, float epochs), so that a locked config still takes any of them from the command
  line (where :func:`prefer_given_units` lets the unit given there win).
  """
  if len(unit) != 1 or not set(unit) <= set(DURATION_TYPES):
    raise ValueError(f'set_duration takes one of {", ".join(DURATION_TYPES)}; got {unit}')
  (given, value), = unit.items()
  with config.unlocked():
    for name, kind in DURATION_TYPES.items():
      key = f'{prefix}_{name}'
      config[key] = config_dict.placeholder(kind)
      config[key] = value if name == given else None
  return config


def prefer_given_units(config: ml_collections.ConfigDict,
                       given: Iterable[str]) -> ml_collections.ConfigDict:
  """Lets the unit of a duration that ``given`` names (dotted keys set by hand, as on the command
  line: ``total_epochs``) win over the unit the config file chose, in place: the duration's other
  units are emptied. Returns ``config``.

  Raises:
    ValueError: ``given`` names two units of one duration (``total_steps`` and ``total_epochs``).
  """
  chosen = {}
  for key in given:
    parent, _, leaf = key.rpartition('.')
    for name in DURATION_TYPES:
      if leaf.endswith(f'_{name}'):
        duration = (parent, leaf[:-len(name) - 1])
        chosen.setdefault(duration, []).append(key)
  for (parent, prefix), keys in chosen.items():
    if len(keys) > 1:
      raise ValueError(f'{" and ".join(keys)} give one duration twice: set only one of them')
    target = config
    for p in filter(None, parent.split('.')):
      target = target[p]
    kept = keys[0].rpartition('.')[2]
    for name in DURATION_TYPES:
      key = f'{prefix}_{name}'
      if key != kept and key in target:
        target[key] = None
  return config


def override(config: ml_collections.ConfigDict,
             values: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys (``{'tasks.coco.batch_size': 4}``) as ``--config.a.b=v`` would, in place
  (a duration given in a unit the config does not use replaces the config's own:
  :func:`prefer_given_units`); returns ``config``."""
  with config.unlocked():
    for key, value in values.items():
      target = config
      *parents, leaf = key.split('.')
      for p in parents:
        target = target[p]
      target[leaf] = value
  return prefer_given_units(config, values)
