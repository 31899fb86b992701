"""Image files → the pixels the model sees: 8-bit RGB, upright, within a size limit.

:func:`read_image` is the one reader behind packing (:mod:`vitpose_jax.data.packing`), the
annotation checks (:mod:`vitpose_jax.data.coco`), ``predict`` and evaluation, so a training
sample, a predicted image and an evaluated one are the same pixels.

- **Bit depth.** 16-bit greyscale (Pillow modes ``I;16``, ``I;16B``, ...) keeps its high byte
  (``v >> 8``), as OpenCV's ``IMREAD_COLOR`` (mmcv, mmpose) reads 16-bit files. Pillow's 32-bit
  integer mode ``I`` is read the same way when its values fit 16 unsigned bits (Pillow holds
  16-bit data in it); otherwise (and for signed 16-bit data) the range [min, max] is stretched to
  [0, 255]. Float mode ``F`` is scaled by 255 when its values lie in [0, 1], otherwise stretched
  the same way; NaN and infinities become 0. A constant image outside those ranges becomes 0.
  Greyscale, palette, bilevel, CMYK and YCbCr images become RGB by Pillow's conversions; alpha is
  dropped (OpenCV drops it too).
- **Orientation.** The EXIF orientation (tag 0x0112) is applied as OpenCV's ``imread`` and
  ``PIL.ImageOps.exif_transpose`` apply it. Where the caller knows the size the labels were made
  on (a COCO file's ``images[].width`` and ``height``), the orientation that has that size wins:
  the upright one when both have it (orientations 2-4, square images), the stored one when only it
  has it. Neither having it is an :class:`ImageError`.
- **Size limit.** An image of more than ``$VITPOSE_JAX_MAX_IMAGE_PIXELS`` pixels (width × height;
  default 178,956,970, the point where Pillow itself refuses, so every image Pillow read before
  is still read) is an :class:`ImageError` naming the file, its size and the setting, raised
  before any pixel is decoded. ``0`` turns the limit off. This limit replaces Pillow's own
  ``Image.MAX_IMAGE_PIXELS``, which reading through this module turns off for the process: Pillow
  would otherwise refuse a large image the setting allows, or warn about one, before this module
  sees its size.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

MAX_PIXELS_ENV = 'VITPOSE_JAX_MAX_IMAGE_PIXELS'
DEFAULT_MAX_PIXELS = 178_956_970  # 2 × Pillow's MAX_IMAGE_PIXELS: where Pillow raises, not warns

_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transposition that makes the image upright (OpenCV's ExifTransform).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (5, 6, 7, 8)


class ImageError(ValueError):
  """An image cannot be read as the model needs it. ``path`` names the file, ``problem`` says
  what is wrong; ``str()`` is ``'{path}: {problem}'``, one line."""

  def __init__(self, path: str, problem: str):
    super().__init__(f'{path}: {problem}')
    self.path, self.problem = path, problem


def max_image_pixels() -> int | None:
  """The largest width × height :func:`read_image` accepts: ``$VITPOSE_JAX_MAX_IMAGE_PIXELS``
  (default 178,956,970), or None when it is 0 (no limit). ValueError names a value that is not a
  whole number ≥ 0."""
  value = os.environ.get(MAX_PIXELS_ENV, '').strip()
  if not value:
    return DEFAULT_MAX_PIXELS
  try:
    limit = int(value)
  except ValueError:
    limit = -1
  if limit < 0:
    raise ValueError(f'{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels (0: no limit)')
  return limit or None


def _open(data: bytes, name: str) -> Image.Image:
  """The decoded image of ``data`` (any mode, as stored), after the size check."""
  limit = max_image_pixels()
  Image.MAX_IMAGE_PIXELS = None  # ours replaces it (module docstring)
  try:
    image = Image.open(io.BytesIO(data))
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise ImageError(name, f'image file is corrupt ({e})') from None
  width, height = image.size
  if limit is not None and width * height > limit:
    raise ImageError(name, f'{width}x{height} = {width * height:,} pixels is over the limit of '
                     f'{limit:,} (set {MAX_PIXELS_ENV} to a larger number, or 0 for no limit, '
                     'to read it)')
  try:
    image.load()  # decodes fully: a truncated file fails here, not in a worker mid-training
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise ImageError(name, f'image file is corrupt ({e})') from None
  return image


def _orientation(image: Image.Image) -> int:
  try:
    value = image.getexif().get(_ORIENTATION_TAG, 1)
  except (OSError, SyntaxError, ValueError):  # unreadable EXIF: the pixels are still fine
    return 1
  return value if value in _UPRIGHT else 1


def _fits(size: tuple[int, int], expected: Sequence | None) -> bool:
  # 0 and None stand for an unknown dimension: some tools write them as placeholders.
  return expected is None or all(e in (None, 0) or e == s for s, e in zip(size, expected))


def _upright(image: Image.Image, name: str, size: Sequence | None) -> Image.Image:
  orientation = _orientation(image)
  stored = image.size
  upright = stored[::-1] if orientation in _SWAPS_AXES else stored
  if _fits(upright, size):
    return image if orientation == 1 else image.transpose(_UPRIGHT[orientation])
  if _fits(stored, size):
    return image
  note = (f' ({upright[0]}x{upright[1]} after its EXIF orientation {orientation})'
          if orientation in _SWAPS_AXES else '')
  raise ImageError(name, f'is {stored[0]}x{stored[1]}{note}, but the annotation file\'s images '
                   f'entry gives width {size[0]!r}, height {size[1]!r}')


def _stretch(values: np.ndarray) -> np.ndarray:
  """[min, max] of the finite values → [0, 255]; everything else 0."""
  finite = np.isfinite(values)
  out = np.zeros(values.shape, np.float64)
  if finite.any():
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi > lo:
      out[finite] = (values[finite].astype(np.float64) - lo) * (255.0 / (hi - lo))
  return np.rint(out)


def _rgb8(image: Image.Image, name: str) -> Image.Image:
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode.startswith('I;16') or mode == 'I':
    values = np.asarray(image).astype(np.int64)
    if values.min(initial=0) < 0 or values.max(initial=0) > 0xFFFF:
      grey = _stretch(values)
    else:
      grey = values >> 8
  elif mode == 'F':
    values = np.asarray(image, np.float64)
    finite = np.isfinite(values)
    inside = finite.any() and values[finite].min() >= 0.0 and values[finite].max() <= 1.0
    grey = np.rint(np.where(finite, values, 0.0) * 255.0) if inside else _stretch(values)
  else:
    try:
      return image.convert('RGB')
    except ValueError as e:
      raise ImageError(name, f'Pillow mode {mode!r} cannot be converted to RGB ({e})') from None
  return Image.fromarray(np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1), 'RGB')


def _read(data: bytes, name: str, size: Sequence | None) -> tuple[Image.Image, bool]:
  """The image as :func:`read_image` returns it, and whether Pillow decodes ``data`` to exactly
  that by itself (8-bit RGB with no orientation to apply)."""
  stored = _open(data, name)
  image = _rgb8(_upright(stored, name, size), name)
  as_stored = image is stored and _orientation(stored) == 1
  return image, as_stored


def _file_bytes(path: str | os.PathLike[str]) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except FileNotFoundError:
    raise ImageError(os.fspath(path), 'image file not found') from None
  except OSError as e:
    raise ImageError(os.fspath(path), f'cannot read the image file ({e.strerror})') from None


def read_image(path: str | os.PathLike[str],
               size: Sequence[int | None] | None = None) -> Image.Image:
  """The image file at ``path`` as a loaded 8-bit RGB PIL image, upright (module docstring).

  ``size``: (width, height) in pixels that the labels were made on, e.g. a COCO ``images``
  entry's ``width`` and ``height``; None, or None/0 in either place, means unknown. It chooses
  between the stored and the EXIF-upright orientation.

  Raises :class:`ImageError` (one line: the file, then the problem) when the file is missing,
  cannot be decoded, is over the pixel limit, or matches ``size`` in neither orientation;
  ValueError when ``$VITPOSE_JAX_MAX_IMAGE_PIXELS`` is not a number.
  """
  name = os.fspath(path)
  return _read(_file_bytes(name), name, size)[0]


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
  """(width, height) in pixels of the image file at ``path`` upright (after its EXIF orientation),
  read from its header without decoding pixels: the size :func:`read_image` gives without a
  ``size``. ImageError when the file is missing or not an image; the pixel limit and a truncated
  body are :func:`read_image`'s to find."""
  name = os.fspath(path)
  Image.MAX_IMAGE_PIXELS = None  # ours replaces it (module docstring)
  try:
    with Image.open(name) as image:
      size, orientation = image.size, _orientation(image)
  except FileNotFoundError:
    raise ImageError(name, 'image file not found') from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise ImageError(name, f'image file is corrupt ({e})') from None
  return size[::-1] if orientation in _SWAPS_AXES else size


def packed_bytes(path: str | os.PathLike[str], size: Sequence[int | None] | None = None) -> bytes:
  """Encoded bytes that Pillow decodes, with no further step, to ``read_image(path, size)``: the
  file itself when it already is such an image (no re-encoding, so JPEGs stay small), otherwise a
  lossless PNG. Raises as :func:`read_image`."""
  name = os.fspath(path)
  data = _file_bytes(name)
  image, as_stored = _read(data, name, size)
  if as_stored:
    return data
  buf = io.BytesIO()
  image.save(buf, format='PNG')
  return buf.getvalue()


def decode_packed(data: bytes) -> Image.Image:
  """The RGB PIL image of bytes :func:`packed_bytes` wrote. These were checked against the pixel
  limit when packed, so the limit is not applied again: a dataset packed under a raised limit
  still trains without it."""
  Image.MAX_IMAGE_PIXELS = None  # ours replaces it (module docstring)
  image = Image.open(io.BytesIO(data))
  image.load()
  return image
