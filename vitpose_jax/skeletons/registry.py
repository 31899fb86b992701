"""The schema registry: built-ins by name, user schemas registered at run time or read by path."""

from __future__ import annotations

import os

from vitpose_jax.skeletons import builtin
from vitpose_jax.skeletons.schema import SchemaError, Schema, load_schema_json

_REGISTRY: dict[str, Schema] = {}


def _ensure_builtins():
  if not _REGISTRY:
    for factory in builtin.BUILTINS:
      schema = factory()
      _REGISTRY[schema.name] = schema


def register(schema: Schema, *, overwrite: bool = False) -> Schema:
  """Adds a schema under its name; replacing an existing one needs ``overwrite=True``."""
  _ensure_builtins()
  existing = _REGISTRY.get(schema.name)
  if existing is not None and existing != schema and not overwrite:
    raise SchemaError(
        f'schema {schema.name!r} is already registered with different contents; '
        'pass overwrite=True to replace it or give the new schema another name'
    )
  _REGISTRY[schema.name] = schema
  return schema


def names() -> list[str]:
  _ensure_builtins()
  return list(_REGISTRY)


def get(name_or_path: str | os.PathLike[str] | Schema) -> Schema:
  """A registered schema by name, or a user schema read from a JSON file path."""
  if isinstance(name_or_path, Schema):
    return name_or_path
  _ensure_builtins()
  key = os.fspath(name_or_path)
  if key in _REGISTRY:
    return _REGISTRY[key]
  if key.endswith('.json') or os.path.sep in key or os.path.exists(key):
    return load_schema_json(key)
  raise SchemaError(
      f'unknown schema {key!r}: known names are {", ".join(_REGISTRY)}; '
      'or give the path of a JSON schema file'
  )
