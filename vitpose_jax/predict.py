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
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from vitpose_jax import backend, checkpoint, codec, models
from vitpose_jax.data import coco, transforms
from vitpose_jax.data.images import MAX_PIXELS_ENV, read_image
from vitpose_jax.draw import draw_pose
from vitpose_jax.evaluation import metrics


def _forward(graphdef, state, pixels, *, task: str, flip_test: bool) -> jax.Array:
  """The network's heatmaps of (B, H, W, 3) crops, flip-tested or not."""
  network = nnx.merge(graphdef, state)
  if not flip_test:
    return network({task: pixels})[0][task]
  # One forward pass over every crop and its mirror image, interleaved so that each device's rows
  # of the batch hold its own crops' mirrors: no data moves between devices.
  n = pixels.shape[0]
  both = jnp.stack([pixels, codec.flip_images(pixels)], axis=1).reshape(2 * n, *pixels.shape[1:])
  heatmaps = network({task: both})[0][task]
  heatmaps = heatmaps.reshape(n, 2, *heatmaps.shape[1:])
  flip_index = network.config.task(task).schema.flip_index
  return codec.flip_test_average(heatmaps[:, 0], heatmaps[:, 1], flip_index)


# Module-level jits keyed by what changes the program (the model's graph, which holds its config
# and kernels, the task, the flip test, the codec), so a new Predictor of the same model, e.g.
# one per evaluation of a training run, reuses the compiled program.
_forward_jit = jax.jit(_forward, static_argnames=('graphdef', 'task', 'flip_test'))
_decode_jit = jax.jit(lambda record, heatmaps: record.decode(heatmaps), static_argnums=0)


def local_mesh() -> Mesh:
  """A 1-D mesh (axis ``data``) of this process's devices: where a Predictor runs by default."""
  return Mesh(np.array(jax.local_devices()), ('data',))


class Predictor:
  """A model ready for inference: jitted heatmaps (with optional flip test) and decoding with the
  model's codec (``model.config.codec``).

  ``heatmaps`` and ``keypoints`` take crops (B, H, W, 3) of the model's input size: uint8 RGB as
  the evaluation transforms produce them, or floats already normalised (see
  :class:`vitpose_jax.models.VitPose`); ``predict_image`` takes a raw image and boxes.

  The crops are split over ``mesh`` (a 1-D device mesh, default :func:`local_mesh`), the model
  replicated on it. A mesh of several processes' devices (a training run's) makes every call a
  collective: each process passes its own crops, as many as every other process, a multiple of
  its devices in the mesh, and gets back the results of those crops. The compiled programs are
  shared by every Predictor of the same model graph, so building one per evaluation costs no
  compilation after the first.
  """

  def __init__(self, model: models.VitPose, *, flip_test: bool = True, mesh: Mesh | None = None):
    self.model = model
    self.config = model.config
    self.codec = model.config.codec
    self.flip_test = flip_test
    self.mesh = local_mesh() if mesh is None else mesh
    if self.mesh.devices.ndim != 1:
      raise ValueError(f'Predictor needs a 1-D device mesh, got axes {self.mesh.axis_names}')
    self._rows = NamedSharding(self.mesh, P(self.mesh.axis_names[0]))
    here = jax.process_index()
    self._local_devices = sum(d.process_index == here for d in self.mesh.devices.flat)
    if not self._local_devices:
      raise ValueError(f'the mesh holds none of the devices of process {here}')
    self._spans_processes = self._local_devices < self.mesh.devices.size
    self._graphdef, state = nnx.split(model)
    self._state = jax.device_put(state, NamedSharding(self.mesh, P()))

  @classmethod
  def from_run(cls, workdir: str, *, step: int | str | None = None, mesh: Mesh | None = None,
               **kwargs) -> Predictor:
    """The model of a run directory (see :func:`vitpose_jax.checkpoint.load_model`) with the
    kernels of the mesh's devices (:func:`vitpose_jax.backend.resolve_kernels`)."""
    mesh = local_mesh() if mesh is None else mesh
    model, _ = checkpoint.load_model(workdir, step=step)
    model = models.with_kernels(model, backend.resolve_kernels(model.config,
                                                               mesh.devices.flat[0]))
    return cls(model, mesh=mesh, **kwargs)

  def heatmaps(self, task: str, pixels: np.ndarray, *, flip_test: bool | None = None) -> jax.Array:
    """(B, H, W, 3) uint8 or normalised float crops → heatmaps (B, h, w, K) float32, rows split
    over the mesh (over every process's crops for a mesh that spans processes)."""
    self.config.task(task)  # a clear error for an unknown task
    flip = self.flip_test if flip_test is None else flip_test
    pixels = np.asarray(pixels)  # uint8 stays uint8: the model normalises it
    if np.issubdtype(pixels.dtype, np.floating):
      pixels = pixels.astype(np.float32)
    n = len(pixels)
    pad = -n % self._local_devices
    if pad and self._spans_processes:
      raise ValueError(f'{n} crops do not split evenly over the {self._local_devices} devices of '
                       'this process in the mesh')
    if pad:
      pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
    rows = jax.make_array_from_process_local_data(self._rows, pixels)
    out = _forward_jit(self._graphdef, self._state, rows, task=task, flip_test=flip)
    return out[:n] if pad else out

  def keypoints(self, task: str, pixels: np.ndarray, center: np.ndarray, scale: np.ndarray,
                rotation: np.ndarray | None = None) -> np.ndarray:
    """Crops and their centre (B, 2), scale (B, 2), rotation (B,) → (B, K, 3) [x, y, score] in
    image pixels: decoded on the devices, mapped back to the image on the host."""
    coords, scores = _decode_jit(self.codec, self.heatmaps(task, pixels))
    coords, scores = self._this_process(coords), self._this_process(scores)
    rotation = np.zeros(len(pixels), np.float32) if rotation is None else rotation
    image_xy = codec.crop_to_image(coords, center, scale, rotation,
                                   image_size=self.codec.input_size)
    return np.concatenate([image_xy, scores[..., None]], axis=-1)

  def _this_process(self, rows: jax.Array) -> np.ndarray:
    """This process's rows of a batch-split array, as numpy."""
    if self._spans_processes:
      rows = multihost_utils.global_array_to_host_local_array(rows, self.mesh, self._rows.spec)
    return np.asarray(rows)

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
    schema = self.config.task(task).schema
    steps = transforms.eval_transforms(schema, self.config.image_size)
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
      heatmaps = np.asarray(predictor.heatmaps(args.task, pixels, flip_test=False))
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
      'image': args.image, 'task': args.task, 'schema': spec.schema.name,
      'keypoint_names': list(spec.schema.keypoints),
      'box_source': 'given boxes' if boxes else 'whole image',
      'instances': [{'bbox': i['bbox'], 'score': i['score'],
                     'keypoints': [[round(float(v), 3) for v in kp] for kp in i['keypoints']]}
                    for i in instances],
  }
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  if args.draw:
    draw_pose(image, [i['keypoints'] for i in instances], spec.schema,
              threshold=args.threshold, boxes=boxes).save(args.draw)
  print(f'{len(instances)} instance(s) → {args.out}' + (f', drawing → {args.draw}'
                                                       if args.draw else ''))
  return 0


if __name__ == '__main__':
  sys.exit(main())
