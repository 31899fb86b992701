"""Reading PyTorch-world weight files into flat ``{name: float32 ndarray}`` dicts.

safetensors files are read without torch (safetensors is a base dependency); ``.pth`` / ``.bin``
pickles need torch (the interop extra) and are opened with ``weights_only=True`` unless the caller
trusts the file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import safetensors.numpy


class ConvertError(ValueError):
  """A checkpoint cannot be imported; the message names the file and the tensor or field."""


_PICKLES = ('.pth', '.pt', '.bin', '.ckpt', '.pkl')
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
  if not np.issubdtype(value.dtype, np.floating):
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


def _read_file(path: str, trust_pickle: bool) -> dict:
  if path.endswith('.safetensors'):
    return safetensors.numpy.load_file(path)
  if path.endswith(_PICKLES):
    torch = _import('torch', path)
    try:
      return torch.load(path, map_location='cpu', weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - torch raises several types for unreadable pickles
      hint = ('' if trust_pickle else '; if it holds Python objects besides tensors and you trust '
              'its source, pass --trust-pickle')
      raise ConvertError(f'{path}: cannot load ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else e}){hint}') from None
  raise ConvertError(f'{path}: unknown weight file type (expected .safetensors or one of '
                     f'{", ".join(_PICKLES)})')


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
  """Float tensors of a weight file or a Hugging Face model directory, as float32 NumPy arrays
  (integer buffers such as BatchNorm's ``num_batches_tracked`` are dropped)."""
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
