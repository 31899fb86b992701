"""Bicubic resampling with torch's semantics, in NumPy (docs/design.md).

The official ViTPose loader, and Sapiens' (mmpretrain's ``resize_pos_embed``), resize position
embeddings with ``F.interpolate(mode='bicubic', align_corners=False)``: Keys' cubic kernel with
a = −0.75, half-pixel centres, source coordinates not clamped, taps beyond the border clamped to
the edge, no antialiasing. ``jax.image.resize``'s bicubic uses a = −0.5 and antialiases when
shrinking, so it would import different numbers.
"""

from __future__ import annotations

import numpy as np

_A = -0.75


def _cubic(x: np.ndarray) -> np.ndarray:
  x = np.abs(x)
  near = ((_A + 2) * x - (_A + 3)) * x * x + 1
  far = ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) weights: ``matrix @ signal`` resizes a 1-D signal as torch does."""
  scale = in_size / out_size
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
  base = np.floor(src)
  frac = src - base
  matrix = np.zeros((out_size, in_size))
  for tap in range(-1, 3):
    index = np.clip(base + tap, 0, in_size - 1).astype(int)
    np.add.at(matrix, (np.arange(out_size), index), _cubic(frac - tap))
  return matrix


def resize_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(H, W, ...) → (h, w, ...), as torch's bicubic interpolate with align_corners=False."""
  rows = bicubic_matrix(x.shape[0], size[0])
  cols = bicubic_matrix(x.shape[1], size[1])
  out = np.einsum('hH,Hw...->hw...', rows, x.astype(np.float64))
  out = np.einsum('wW,hW...->hw...', cols, out)
  return out.astype(x.dtype)


def resample_pos_embed(pos: np.ndarray, src_grid: tuple[int, int], dst_grid: tuple[int, int],
                       *, cls_slot: bool = True) -> np.ndarray:
  """A (1, S + rows·cols, C) position embedding, its patch part resampled from ``src_grid`` to
  ``dst_grid`` (rows, cols). ``cls_slot``: whether a leading slot (S = 1, ViTPose's, kept as it
  is) comes before the patches; without one (S = 0, Sapiens') every entry is a patch's. ValueError
  when the length is not S + rows·cols."""
  extra = int(cls_slot)
  if pos.ndim != 3 or pos.shape[1] != extra + src_grid[0] * src_grid[1]:
    raise ValueError(f'position embedding of shape {pos.shape} does not hold '
                     f'{"a cls slot and " if cls_slot else ""}a {src_grid[0]}×{src_grid[1]} grid')
  if tuple(src_grid) == tuple(dst_grid):
    return pos
  grid = pos[0, extra:].reshape(*src_grid, pos.shape[2])
  grid = resize_bicubic(grid, dst_grid).reshape(1, -1, pos.shape[2])
  return np.concatenate([pos[:, :extra], grid], axis=1)
