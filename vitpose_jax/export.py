"""One task of a model as a deployable StableHLO artifact (``jax.export``), weights included.

    python -m vitpose_jax.convert --export TASK --src RUN --dst FILE --batch N \\
        [--flip-test] [--step S] [--platforms cpu,cuda]

FILE holds ``Exported.serialize()`` bytes: a function of normalised pixels (N, H, W, 3) float32
to heatmaps (N, h, w, K) float32 with the network's weights as constants, so serving needs
neither a checkpoint nor this package: ``jax.export.deserialize(open(FILE, 'rb').read())
.call(pixels)`` in any JAX whose calling convention covers the artifact's. ``FILE.json`` beside
it says what goes in and comes out (shapes, layout, normalisation, keypoint names, and the codec
that decodes the heatmaps). With
``--flip-test`` the artifact also runs the mirrored crops and averages the flipped-back heatmaps
in, as :class:`vitpose_jax.predict.Predictor` does. The batch size is fixed at export time.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vitpose_jax import checkpoint, codec, models
from vitpose_jax.data import transforms

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
INPUT_LAYOUT = 'NHWC float32, RGB, normalised with ImageNet mean/std'
OUTPUT_LAYOUT = '(B, h, w, K) float32 heatmaps, channel k = keypoint_names[k]'


def export_task(model: models.VitPose, task: str, *, batch_size: int, flip_test: bool = False,
                platforms: Sequence[str] | None = None) -> jax.export.Exported:
  """``task``'s network as an Exported function of pixels (batch_size, H, W, 3) float32 returning
  heatmaps (batch_size, h, w, K) float32; ``platforms`` None lowers for the default backend."""
  config = model.config
  flip_index = config.task(task).schema.flip_index  # a clear error for an unknown task
  if batch_size < 1:
    raise ValueError(f'batch size must be at least 1, got {batch_size}')
  # XLA's attention whatever the model asks for: cuDNN's fused kernel would tie the artifact to
  # NVIDIA GPUs. The MLP form is the faster one for the platforms the artifact is for.
  targets = tuple(platforms) if platforms is not None else (jax.default_backend(),)
  model = models.with_kernels(model, models.Kernels('xla', joined_mlp_kernels='cpu' not in targets))
  graphdef, state = nnx.split(model)

  # The state is closed over rather than passed in, so the weights are traced as constants and
  # serialised into the module; only the tensors this task reaches end up in it.
  def heatmaps(pixels):
    network = nnx.merge(graphdef, state)
    if not flip_test:
      return network({task: pixels})[0][task]
    both = network({task: jnp.concatenate([pixels, codec.flip_images(pixels)])})[0][task]
    return codec.flip_test_average(both[:batch_size], both[batch_size:], flip_index)

  pixels = jax.ShapeDtypeStruct((batch_size, *config.image_size, 3), jnp.float32)
  return jax.export.export(jax.jit(heatmaps),
                           platforms=None if platforms is None else tuple(platforms))(pixels)


def artifact_metadata(model: models.VitPose, task: str, *, flip_test: bool,
                      source: str | None = None, step: int | None = None) -> dict[str, Any]:
  """What a deployer needs beside the artifact: the task's keypoints and how to feed it."""
  schema = model.config.task(task).schema
  return {
      'task': task,
      'schema': schema.name,
      'keypoint_names': list(schema.keypoints),
      'input_layout': INPUT_LAYOUT,
      # RGB values in 0-255 go in as (value - mean) / std.
      'normalisation': {'mean': [round(float(v), 4) for v in transforms.IMAGENET_MEAN],
                        'std': [round(float(v), 4) for v in transforms.IMAGENET_STD],
                        'pixel_range': [0, 255]},
      'output_layout': OUTPUT_LAYOUT,
      # How the heatmaps decode to keypoints: vitpose_jax.codec.UDPHeatmap.from_dict(...).decode.
      'codec': model.config.codec.to_dict(),
      'flip_test': flip_test,
      'source': {'run': None if source is None else os.path.abspath(source), 'step': step},
  }


def write_artifact(exported: jax.export.Exported, path: str, metadata: dict[str, Any]):
  """Writes the serialised artifact to ``path`` and ``metadata`` plus its shapes, platforms and
  JAX version to ``path + '.json'``."""
  data = exported.serialize()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  sidecar = {
      **metadata,
      'input_shape': list(exported.in_avals[0].shape),
      'output_shape': list(exported.out_avals[0].shape),
      'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'calling_convention_version': exported.calling_convention_version,
      'size_bytes': len(data),
  }
  with open(path + '.json', 'w') as f:
    json.dump(sidecar, f, indent=1)


def load_artifact(path: str) -> jax.export.Exported:
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'{path}: cannot read artifact ({e})') from None
  return jax.export.deserialize(bytearray(data))


def parse_platforms(value: str | None) -> tuple[str, ...] | None:
  """``--platforms`` 'cpu,cuda' → ('cpu', 'cuda'); None keeps the default backend."""
  if value is None:
    return None
  names = tuple(dict.fromkeys(p.strip().lower() for p in value.split(',')))
  unknown = [p for p in names if p not in PLATFORMS]
  if unknown:
    raise ValueError(f'--platforms {value!r}: expected a comma-separated subset of '
                     f'{", ".join(PLATFORMS)}')
  return names


def main_export(args: argparse.Namespace) -> int:
  """``convert --export``: ``args`` has export (task), src, dst, batch, flip_test, step (None, an
  int or 'best') and platforms (a comma string or None). Raises ValueError (CheckpointError and
  ModelConfigError among them) with a one-line message for bad input."""
  if args.batch < 1:
    raise ValueError(f'--batch must be at least 1, got {args.batch}')
  platforms = parse_platforms(args.platforms)
  model, step = checkpoint.load_model(args.src, step=args.step)
  exported = export_task(model, args.export, batch_size=args.batch, flip_test=args.flip_test,
                         platforms=platforms)
  write_artifact(exported, args.dst, artifact_metadata(
      model, args.export, flip_test=args.flip_test, source=args.src, step=step))
  size = os.path.getsize(args.dst) / 2**20
  print(f'wrote {args.dst} ({size:.1f} MB, {",".join(exported.platforms)}): task '
        f'{args.export!r} pixels {tuple(exported.in_avals[0].shape)} float32 → heatmaps '
        f'{tuple(exported.out_avals[0].shape)} float32'
        f'{", flip test" if args.flip_test else ""}; metadata {args.dst}.json')
  return 0
