"""Reading PyTorch-world weight files into flat ``{name: float32 ndarray}`` dicts.

safetensors files are read without torch (safetensors is a base dependency); ``.pth`` / ``.bin``
pickles need torch (the interop extra) and are opened with ``weights_only=True`` unless the caller
trusts the file.

Two more torch archives hold whole programs rather than state dicts; only their state dicts are
read, and the program is never run here. They are told apart by their zip entries, not their
names (Sapiens' TorchScript files end in ``.pt2`` too):

- TorchScript (``torch.jit.save``; a ``code/`` folder and ``constants.pkl``): read with
  ``torch.jit.load``, which does not use Python's pickle, so no trust flag is asked for. Loading
  does compile the archive's TorchScript code, and TorchScript's interpreter runs a module's
  ``__setstate__`` if it has one; convert such files from sources you trust, as any model.
- torch.export (``torch.export.save``; ``archive_format`` or, in older files,
  ``serialized_exported_program.json``): ``torch.export.load`` unpickles with
  ``weights_only=False``, so these need the caller's trust like a pickle holding Python objects.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile

import numpy as np
import safetensors.numpy


class ConvertError(ValueError):
  """A checkpoint cannot be imported; the message names the file and the tensor or field."""


_PICKLES = ('.pth', '.pt', '.bin', '.ckpt', '.pkl')
_EXTRA_FLOATS = ('bfloat16', 'float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz', 'float8_e5m2fnuz')
_ANSI = re.compile(r'\x1b\[[0-9;]*m')
_ARCHIVES = ('.pt2',)  # torch.export's extension, and that of Sapiens' TorchScript files
_HF_WEIGHTS = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
               'pytorch_model.bin.index.json')


def _import(module: str, path: str):
  try:
    return __import__(module, fromlist=['_'])
  except ImportError:
    raise ConvertError(f'{path}: reading this file needs {module.split(".")[0]!r}; install the '
                       'interop extra (pip install torch==2.13.0 && pip install -e ".[interop]")'
                       ) from None


def _to_numpy(value) -> np.ndarray | None:
  if hasattr(value, 'detach'):  # a torch tensor, possibly bf16 which numpy cannot hold
    value = value.detach().cpu()
    if not value.is_floating_point():
      return None
    return value.float().numpy()
  value = np.asarray(value)
  # ml_dtypes' bfloat16 and float8 types (safetensors files) are floats numpy does not rank as
  # np.floating; each widens to float32 exactly.
  if not (np.issubdtype(value.dtype, np.floating) or value.dtype.name in _EXTRA_FLOATS):
    return None
  return value.astype(np.float32)


def _unwrap(path: str, data) -> dict:
  """The state dict inside a training checkpoint (mmcv/mmengine, MAE, DeiT layouts)."""
  if not isinstance(data, dict):
    raise ConvertError(f'{path}: holds a {type(data).__name__}, not a state dict')
  for key in ('state_dict', 'model', 'module'):
    if key in data and isinstance(data[key], dict):
      data = data[key]
      break
  if data and all(k.startswith('module.') for k in data):  # saved from DistributedDataParallel
    data = {k[len('module.'):]: v for k, v in data.items()}
  return data


def _torch_archive_kind(path: str) -> str | None:
  """'torchscript' or 'export' for a zip written by ``torch.jit.save`` or ``torch.export.save``,
  by its entries; None for anything else (a ``torch.save`` zip, an old-style pickle)."""
  if not zipfile.is_zipfile(path):
    return None
  with zipfile.ZipFile(path) as archive:
    # Entries sit under one top folder named by the writer, except in old torch.export files.
    tails = {name.split('/', 1)[-1] for name in archive.namelist()}
  if 'constants.pkl' in tails or any(t.startswith('code/') for t in tails):
    return 'torchscript'
  if {'archive_format', 'serialized_exported_program.json'} & tails:
    return 'export'
  return None


def _cannot_load(path: str, error: Exception, hint: str = '') -> ConvertError:
  # torch colours parts of its messages for terminals: the escape codes would garble ours.
  text = _ANSI.sub('', str(error)).strip()
  first = text.splitlines()[0] if text else type(error).__name__
  return ConvertError(f'{path}: cannot load ({type(error).__name__}: {first}){hint}')


def _read_archive(path: str, kind: str, trust_pickle: bool) -> dict:
  torch = _import('torch', path)
  if kind == 'export' and not trust_pickle:
    raise ConvertError(f'{path}: a torch.export archive; torch.export.load unpickles Python '
                       'objects (weights_only=False), so pass --trust-pickle if you trust its '
                       'source')
  try:
    if kind == 'export':
      return dict(torch.export.load(path).state_dict)
    with warnings.catch_warnings():
      # torch.jit.load is deprecated in favour of torch.export, which these files predate.
      warnings.simplefilter('ignore', DeprecationWarning)
      return dict(torch.jit.load(path, map_location='cpu').state_dict())
  except Exception as e:  # noqa: BLE001 - torch raises several types for unreadable archives
    raise _cannot_load(path, e) from None


def _read_file(path: str, trust_pickle: bool) -> dict:
  if path.endswith('.safetensors'):
    try:
      return safetensors.numpy.load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for damaged files
      raise _cannot_load(path, e) from None
  if not path.endswith(_PICKLES + _ARCHIVES):
    raise ConvertError(f'{path}: unknown weight file type (expected .safetensors or one of '
                       f'{", ".join(_PICKLES + _ARCHIVES)})')
  kind = _torch_archive_kind(path)
  if kind:
    return _read_archive(path, kind, trust_pickle)
  if path.endswith(_ARCHIVES):
    raise ConvertError(f'{path}: neither a TorchScript nor a torch.export archive')
  torch = _import('torch', path)
  try:
    return torch.load(path, map_location='cpu', weights_only=not trust_pickle)
  except Exception as e:  # noqa: BLE001 - torch raises several types for unreadable pickles
    # Only the weights-only unpickler's refusal is helped by trusting the file; a damaged file
    # is not.
    refused = not trust_pickle and 'weights only load failed' in str(e).lower()
    raise _cannot_load(path, e, '; it holds Python objects besides tensors: if you trust its '
                       'source, pass --trust-pickle' if refused else '') from None


def _hf_files(directory: str) -> list[str]:
  for name in _HF_WEIGHTS:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      continue
    if name.endswith('.index.json'):
      with open(path) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
      return [os.path.join(directory, s) for s in shards]
    return [path]
  raise ConvertError(f'{directory}: no weights found (looked for {", ".join(_HF_WEIGHTS)})')


def read_state_dict(src: str, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  """Float tensors of a weight file (safetensors, a torch pickle, a TorchScript or torch.export
  archive's state dict) or a Hugging Face model directory, as float32 NumPy arrays (integer
  buffers such as BatchNorm's ``num_batches_tracked`` are dropped; bfloat16 widens exactly).
  ConvertError names the file for anything unreadable, and asks for ``trust_pickle`` where
  reading would unpickle Python objects."""
  if not os.path.exists(src):
    raise ConvertError(f'{src}: no such file or directory')
  files = _hf_files(src) if os.path.isdir(src) else [src]
  out = {}
  for path in files:
    for name, value in _unwrap(path, _read_file(path, trust_pickle)).items():
      array = _to_numpy(value)
      if array is not None:
        out[name] = array.astype(np.float32)
  if not out:
    raise ConvertError(f'{src}: holds no floating-point tensors')
  return out


def read_hf_config(directory: str) -> dict:
  path = os.path.join(directory, 'config.json')
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConvertError(f'{directory}: no config.json (a Hugging Face model directory holds '
                       'config.json and the weights)') from None
  except json.JSONDecodeError as e:
    raise ConvertError(f'{path}: not valid JSON ({e})') from None
