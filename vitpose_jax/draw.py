"""Pose drawings with a schema's links and colours, legible from 256×192 crops to full images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vitpose_jax.skeletons import Schema

# Small images are drawn at this multiple and downsampled: PIL draws without antialiasing, and
# one-pixel limbs on a 192-pixel-wide crop are otherwise jagged and hard to read.
_SUPERSAMPLE = 3


def draw_pose(
    image: np.ndarray | Image.Image,
    instances: Sequence[np.ndarray],
    schema: Schema,
    *,
    threshold: float = 0.3,
    boxes: Sequence[Sequence[float]] | None = None,
) -> Image.Image:
  """Draws each instance's keypoints and links onto a copy of ``image``.

  Args:
    image: uint8 (H, W, 3) RGB array or a PIL image.
    instances: per person a (K, 3) array [x, y, score] (or [x, y, v]) in image pixels, integer
      coordinates at pixel centres.
    schema: the keypoint schema: links and colours come from it.
    threshold: keypoints scoring below it, and links touching them, are not drawn.
    boxes: optional [x, y, w, h] per instance, drawn as thin outlines.
  """
  base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  base = base.convert('RGB')
  w, h = base.size
  factor = _SUPERSAMPLE if min(w, h) < 512 else 1
  canvas = base.resize((w * factor, h * factor), Image.Resampling.BICUBIC) if factor > 1 else base
  canvas = canvas.copy()
  draw = ImageDraw.Draw(canvas)
  # Widths follow the image size so limbs stay visible on both crops and large photos.
  width = max(1, round(min(w, h) / 120 * factor))
  radius = max(2, round(width * 1.4))

  def at(x, y):
    # Pixel centres sit at integer coordinates; the supersampled canvas's centres are offset.
    return ((x + 0.5) * factor - 0.5, (y + 0.5) * factor - 0.5)

  for box in boxes or ():
    x, y, bw, bh = box
    draw.rectangle([at(x - 0.5, y - 0.5), at(x + bw - 0.5, y + bh - 0.5)],
                   outline=(255, 255, 255), width=max(1, width // 2))
  for kps in instances:
    kps = np.asarray(kps, np.float64)
    shown = kps[:, 2] >= threshold
    for (a, b), color in zip(schema.link_indices, schema.link_colors):
      if shown[a] and shown[b]:
        draw.line([at(*kps[a, :2]), at(*kps[b, :2])], fill=tuple(color), width=width)
    for (x, y, _), color, visible in zip(kps, schema.keypoint_colors, shown):
      if visible:
        cx, cy = at(x, y)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=tuple(color),
                     outline=(0, 0, 0), width=max(1, width // 3))
  if factor > 1:
    canvas = canvas.resize((w, h), Image.Resampling.LANCZOS)
  return canvas
