"""Inference: images and person boxes → keypoints in image coordinates, with drawings.

    python -m vitpose_jax.predict --workdir RUN --task coco --image photo.jpg \\
        [--boxes boxes.json] --out keypoints.json [--draw drawing.png]
    python -m vitpose_jax.predict --workdir RUN --task coco --pixels x.npy --heatmaps-out h.npy

The image is read by :func:`vitpose_jax.data.images.read_image`, as training and evaluation read
theirs: boxes and keypoints are in its upright pixels (EXIF orientation applied). The first form
crops each box (the whole image when no boxes are given) as the evaluation pipeline does (box
padded ×1.25 at the model's aspect, UDP affine crop; the model applies the ImageNet
normalisation), runs the model with flip testing, decodes the heatmaps with DARK-UDP and maps the
keypoints back to the image. ``--boxes`` is a JSON list of [x, y, w, h] boxes or of objects with
``bbox`` and optionally ``score`` (COCO detection results for this image).

The raw form runs the network alone on already-normalised float32 input (B, H, W, 3) and writes
heatmaps (B, K, h, w) in the official/HF channel-first layout, for parity checks and debugging.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from vitpose_jax import checkpoint, codec, models
from vitpose_jax.data import coco, transforms
from vitpose_jax.data.images import MAX_PIXELS_ENV, read_image
from vitpose_jax.draw import draw_pose
from vitpose_jax.evaluation import metrics


class Predictor:
  """A model ready for inference: jitted heatmaps (with optional flip test) and decoding.

  ``heatmaps`` and ``keypoints`` take crops (B, H, W, 3) of the model's input size: uint8 RGB as
  the evaluation transforms produce them, or floats already normalised (see
  :class:`vitpose_jax.models.VitPose`); ``predict_image`` takes a raw image and boxes.
  """

  def __init__(self, model: models.VitPose, *, flip_test: bool = True, blur_kernel: int = 11):
    self.model = model
    self.config = model.config
    self.flip_test = flip_test
    self.blur_kernel = blur_kernel
    graphdef, self._state = nnx.split(model)

    def network(state, pixels, task):
      heatmaps, _ = nnx.merge(graphdef, state)({task: pixels})
      return heatmaps[task]

    def with_flip(state, pixels, task):
      # One forward pass over the crops and their mirror images, then the flipped half is
      # mirrored back with the schema's flip pairs and averaged in.
      both = network(state, jnp.concatenate([pixels, codec.flip_images(pixels)]), task)
      n = pixels.shape[0]
      flip_index = self.config.task(task).skeleton.flip_index
      return codec.flip_test_average(both[:n], both[n:], flip_index)

    self._network = jax.jit(network, static_argnames='task')
    self._with_flip = jax.jit(with_flip, static_argnames='task')

  @classmethod
  def from_run(cls, workdir: str, *, step: int | str | None = None, **kwargs) -> Predictor:
    model, _ = checkpoint.load_model(workdir, step=step)
    return cls(model, **kwargs)

  def heatmaps(self, task: str, pixels: np.ndarray, *, flip_test: bool | None = None):
    """(B, H, W, 3) uint8 or normalised float crops → heatmaps (B, h, w, K) float32."""
    self.config.task(task)  # a clear error for an unknown task
    flip = self.flip_test if flip_test is None else flip_test
    fn = self._with_flip if flip else self._network
    pixels = jnp.asarray(pixels)  # uint8 stays uint8: the model normalises it
    if jnp.issubdtype(pixels.dtype, jnp.floating):
      pixels = pixels.astype(jnp.float32)
    return np.asarray(fn(self._state, pixels, task))

  def keypoints(self, task: str, pixels: np.ndarray, center: np.ndarray, scale: np.ndarray,
                rotation: np.ndarray | None = None) -> np.ndarray:
    """Crops and their centre (B, 2), scale (B, 2), rotation (B,) → (B, K, 3) [x, y, score] in
    image pixels."""
    heatmaps = self.heatmaps(task, pixels)
    rotation = np.zeros(len(pixels), np.float32) if rotation is None else rotation
    coords, scores = codec.decode_to_image(
        heatmaps, center, scale, rotation, image_size=self.config.image_size,
        heatmap_size=self.config.heatmap_size, blur_kernel=self.blur_kernel)
    return np.concatenate([np.asarray(coords), np.asarray(scores)[..., None]], axis=-1)

  def predict_image(self, task: str, image: np.ndarray | Image.Image,
                    boxes: Sequence[Sequence[float]] | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One uint8 (H, W, 3) RGB image (array or PIL, as packed sources hold it) and [x, y, w, h]
    boxes (default: the whole image) → per box ``{'bbox', 'score', 'keypoints': (K, 3) [x, y,
    score]}``; ``score`` is the box score times the mean keypoint score above 0.2, as the
    official COCO evaluation rescores."""
    h, w = transforms.image_hw(image)
    if boxes is None or len(boxes) == 0:
      boxes = [[0.0, 0.0, float(w), float(h)]]
    box_scores = [1.0] * len(boxes) if box_scores is None else list(box_scores)
    height, width = self.config.image_size
    skeleton = self.config.task(task).skeleton
    steps = transforms.eval_transforms(skeleton, self.config.image_size)
    crops, centers, scales = [], [], []
    for box in boxes:
      center, scale = coco.box_to_center_scale(box, aspect_ratio=width / height)
      # The evaluation transforms themselves, so inference crops exactly as evaluation does.
      sample = {'image': image, 'center': center, 'scale': scale}
      for step in steps:
        sample = step.map(sample)
      crops.append(sample['image'])
      centers.append(center)
      scales.append(scale)
    kps = self.keypoints(task, np.stack(crops), np.stack(centers), np.stack(scales))
    return metrics.rescore([{'bbox': [float(v) for v in box], 'score': float(box_score),
                             'keypoints': k} for box, box_score, k in zip(boxes, box_scores, kps)])


def _read_boxes(path: str) -> tuple[list[list[float]], list[float]]:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: cannot read boxes ({e})') from None
  boxes, scores = [], []
  for i, item in enumerate(data if isinstance(data, list) else [None]):
    box = item.get('bbox') if isinstance(item, dict) else item
    if not (isinstance(box, list) and len(box) == 4 and box[2] > 0 and box[3] > 0):
      raise ValueError(f'{path}: entry {i} is not an [x, y, w, h] box with positive size or an '
                       'object with such a "bbox"')
    boxes.append([float(v) for v in box])
    scores.append(float(item.get('score', 1.0)) if isinstance(item, dict) else 1.0)
  return boxes, scores


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m vitpose_jax.predict', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='run directory (model.json + checkpoints)')
  parser.add_argument('--task', required=True, help='which task head to use')
  parser.add_argument('--step', type=checkpoint.parse_step,
                      help='checkpoint step, or "best" (default: the latest)')
  parser.add_argument('--image', help='an image file (any bit depth; EXIF orientation applied; '
                      f'at most ${MAX_PIXELS_ENV} pixels)')
  parser.add_argument('--boxes', help='JSON list of [x, y, w, h] or {"bbox": ..., "score": ...}')
  parser.add_argument('--out', help='keypoints JSON to write')
  parser.add_argument('--draw', help='PNG drawing to write')
  parser.add_argument('--threshold', type=float, default=0.3,
                      help='keypoint score below which the drawing leaves a point out')
  parser.add_argument('--no-flip', action='store_true', help='skip the flip test')
  parser.add_argument('--pixels', help='raw mode: normalised float32 (B, H, W, 3) .npy input')
  parser.add_argument('--heatmaps-out', help='raw mode: heatmaps (B, K, h, w) .npy output')
  args = parser.parse_args(argv)
  raw = args.pixels is not None or args.heatmaps_out is not None
  if raw and not (args.pixels and args.heatmaps_out):
    parser.error('raw mode needs both --pixels and --heatmaps-out')
  if not raw and not (args.image and args.out):
    parser.error('give --image and --out (or --pixels and --heatmaps-out for raw mode)')
  try:
    predictor = Predictor.from_run(args.workdir, step=args.step, flip_test=not args.no_flip)
    spec = predictor.config.task(args.task)
    if raw:
      pixels = np.load(args.pixels)
      expected = (*predictor.config.image_size, 3)
      if pixels.ndim != 4 or pixels.shape[1:] != expected:
        raise ValueError(f'{args.pixels}: shape {pixels.shape}, expected (B, {expected[0]}, '
                         f'{expected[1]}, 3)')
      heatmaps = predictor.heatmaps(args.task, pixels, flip_test=False)
      np.save(args.heatmaps_out, heatmaps.transpose(0, 3, 1, 2))
      print(f'wrote heatmaps {heatmaps.shape[0]}x{heatmaps.shape[3]}x{heatmaps.shape[1]}x'
            f'{heatmaps.shape[2]} (B, K, h, w) to {args.heatmaps_out}')
      return 0
    image = np.asarray(read_image(args.image))
    boxes, scores = _read_boxes(args.boxes) if args.boxes else (None, None)
    instances = predictor.predict_image(args.task, image, boxes, scores)
  except (ValueError, checkpoint.CheckpointError, models.ModelConfigError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  result = {
      'image': args.image, 'task': args.task, 'schema': spec.skeleton.name,
      'keypoint_names': list(spec.skeleton.keypoints),
      'box_source': 'given boxes' if boxes else 'whole image',
      'instances': [{'bbox': i['bbox'], 'score': i['score'],
                     'keypoints': [[round(float(v), 3) for v in kp] for kp in i['keypoints']]}
                    for i in instances],
  }
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  if args.draw:
    draw_pose(image, [i['keypoints'] for i in instances], spec.skeleton,
              threshold=args.threshold, boxes=boxes).save(args.draw)
  print(f'{len(instances)} instance(s) → {args.out}' + (f', drawing → {args.draw}'
                                                       if args.draw else ''))
  return 0


if __name__ == '__main__':
  sys.exit(main())
