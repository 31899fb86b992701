"""Keypoint schemas as data: the record, the built-ins, a registry and user schemas from JSON.

>>> from vitpose_jax import skeletons
>>> skeletons.get('coco17').num_keypoints
17
>>> skeletons.get('my_schema.json')  # a user schema, by path  # doctest: +SKIP
"""

from vitpose_jax.skeletons.registry import get, names, register
from vitpose_jax.skeletons.schema import (
    SchemaError,
    SchemaWarning,
    Schema,
    derive_flip_pairs,
    keypoint_mapping,
    load_schema_json,
    make_schema,
    match_keypoint_names,
    schema_from_dict,
    split_side,
    unpaired_side_names,
)

__all__ = [
    'SchemaError', 'SchemaWarning', 'Schema', 'derive_flip_pairs', 'get', 'keypoint_mapping',
    'load_schema_json', 'make_schema', 'match_keypoint_names', 'names', 'register',
    'schema_from_dict', 'split_side', 'unpaired_side_names',
]
