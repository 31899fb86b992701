"""Config helpers in the big_vision style: ``--config=configs/x.py:variant=B,runlocal``."""

from __future__ import annotations

import importlib.util
import os
import types
from typing import Any

import ml_collections


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


def override(config: ml_collections.ConfigDict,
             values: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys (``{'tasks.coco.batch_size': 4}``) as ``--config.a.b=v`` would, in place;
  returns ``config``."""
  with config.unlocked():
    for key, value in values.items():
      target = config
      *parents, leaf = key.split('.')
      for p in parents:
        target = target[p]
      target[leaf] = value
  return config
