"""Heatmap codec: UDP Gaussian targets, the heatmap MSE loss and DARK-UDP decoding.

Layouts: keypoints (..., K, 2) are [x, y] in input-crop pixels, integer coordinates at pixel
centres, x right, y down; their loss weights (..., K) come beside them. Heatmaps are
channels-last, (..., h, w, K), as the heads emit them. Sizes are (H, W), the project's
convention; coordinates are (x, y).

Targets are made on device from the crop keypoints: shipping K maps per sample from the host would
dominate host→device traffic for large schemas (WholeBody: 133 × 64 × 48 floats per sample).
For the same reason decoding runs on device and only (K, 2) coordinates and (K,) scores per sample
come back; the back-transform from crop to image pixels is cheap numpy on the host.

:class:`UDPHeatmap` is the codec of a model: its input and heatmap sizes, target σ and decoding blur
kernel in one frozen record (as mmpose 1.x's ``UDPHeatmap`` keeps them), saved in ``model.json``
and used by training, prediction, evaluation and export. The functions below take every one of
those explicitly; the record is where their values live.

Decoding follows the official ViTPose test recipe (mmpose 0.x ``test_cfg`` with
``post_process='default'``, ``use_udp=True``, ``modulate_kernel=11``, ``flip_test=True``,
``shift_heatmap=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def udp_targets(
    keypoints: jax.Array,
    keypoint_weights: jax.Array,
    *,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[jax.Array, jax.Array]:
  """UDP Gaussian heatmap targets (Huang et al., CVPR 2020; mmpose 0.x ``_udp_generate_target``).

  A keypoint maps to heatmap coordinates by ``x · (W_hm − 1) / (W_in − 1)`` (likewise y): UDP
  aligns the first and last pixel centres of input and heatmap, so the scale is unbiased. Its map
  is ``exp(−((i − μx)² + (j − μy)²) / (2σ²))`` at integer heatmap pixels (i, j) with the sub-pixel
  μ, truncated like mmpose to the window ``ul ≤ (i, j) < br`` where ``ul = int(round(μ) − 3σ)``,
  ``br = int(round(μ) + 3σ + 1)`` and ``round(μ) = int(μ + 0.5)`` (Python ``int``, toward zero).
  The weight is the input weight, set to 0 when that window misses the heatmap (``ul ≥ size`` or
  ``br < 0`` on either axis); maps are zero wherever the weight is not positive.

  For non-integer 3σ mmpose's window centre drifts off μ by its integer arithmetic; here the
  Gaussian stays centred on μ and only the window bounds follow mmpose (identical for σ = 2).

  Args:
    keypoints: (..., K, 2) [x, y] in input-crop pixels.
    keypoint_weights: (..., K) loss weights (the crop's ``keypoint_weights``: 1 where labelled).
    image_size: model input (H, W).
    heatmap_size: heatmap (h, w).
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    heatmaps (..., h, w, K) float32 and weights (..., K) float32.
  """
  keypoints = jnp.asarray(keypoints, jnp.float32)
  (in_h, in_w), (hm_h, hm_w) = image_size, heatmap_size
  mu_x = keypoints[..., 0] * ((hm_w - 1) / (in_w - 1))
  mu_y = keypoints[..., 1] * ((hm_h - 1) / (in_h - 1))
  radius = 3.0 * sigma

  def axis(mu, size):
    """Truncated 1-D Gaussians (..., K, size) and whether each window meets [0, size)."""
    centre = jnp.trunc(mu + 0.5)
    lo, hi = jnp.trunc(centre - radius), jnp.trunc(centre + radius + 1)
    grid = jnp.arange(size, dtype=jnp.float32)
    in_window = (grid >= lo[..., None]) & (grid < hi[..., None])
    g = jnp.exp(-jnp.square(grid - mu[..., None]) / (2.0 * sigma**2))
    return jnp.where(in_window, g, 0.0), (lo < size) & (hi >= 0)

  gx, meets_x = axis(mu_x, hm_w)
  gy, meets_y = axis(mu_y, hm_h)
  weights = jnp.where(meets_x & meets_y, jnp.asarray(keypoint_weights, jnp.float32), 0.0)
  gx = jnp.where(weights[..., None] > 0, gx, 0.0)
  # The 2-D Gaussian is separable, so the (h, w) map is an outer product of the two axes.
  heatmaps = jnp.swapaxes(gy, -1, -2)[..., :, None, :] * jnp.swapaxes(gx, -1, -2)[..., None, :, :]
  return heatmaps, weights


def heatmap_distillation(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Output distillation: the mean squared difference to the teacher's heatmaps (constants: no
  gradient reaches the teacher), over samples, pixels and keypoints."""
  return jnp.mean(jnp.square(student - jax.lax.stop_gradient(teacher)))


def joints_mse(
    pred: jax.Array,
    target: jax.Array,
    weights: jax.Array,
    joint_weights: Sequence[float] | jax.Array | None = None,
) -> jax.Array:
  """Heatmap MSE with per-keypoint weights: mmpose's ``JointsMSELoss(use_target_weight=True)``.

  mmpose 0.x as ViTPose ships it (``mmpose/models/losses/mse_loss.py``) sums over joints
  ``nn.MSELoss()(pred·w, target·w)`` (mean over batch and pixels) and divides by K, with no 0.5
  factor (the 0.5 of the original HRNet code was dropped): the mean over every sample, pixel and
  joint of ``((pred − target)·w)²``. Samples and joints of weight 0 still count in the mean.

  Args:
    pred: (..., h, w, K) predicted heatmaps.
    target: (..., h, w, K) target heatmaps.
    weights: (..., K) per-keypoint target weights, e.g. from :func:`udp_targets`.
    joint_weights: optional (K,) per-joint loss weights (a schema's ``joint_weights``); they scale
      ``weights`` as mmpose's ``use_different_joint_weights`` does, so they enter squared.

  Returns:
    The scalar float32 loss.
  """
  weights = jnp.asarray(weights, jnp.float32)
  if joint_weights is not None:
    weights = weights * jnp.asarray(joint_weights, jnp.float32)
  diff = (pred.astype(jnp.float32) - target.astype(jnp.float32)) * weights[..., None, None, :]
  return jnp.mean(jnp.square(diff))


# OpenCV's ``getGaussianKernel`` uses these fixed binomial kernels, not the sampled Gaussian, for
# odd sizes up to 7 when no sigma is given (as ``post_dark_udp`` calls ``cv2.GaussianBlur``).
_CV2_SMALL_GAUSSIAN = (
    (1.0,),
    (0.25, 0.5, 0.25),
    (0.0625, 0.25, 0.375, 0.25, 0.0625),
    (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
)


def _cv2_gaussian_kernel(size: int) -> np.ndarray:
  """The 1-D kernel of ``cv2.GaussianBlur(x, (size, size), 0)``: the fixed table up to size 7,
  else a Gaussian of sigma ``0.3·((size − 1)·0.5 − 1) + 0.8`` (2.0 for size 11) sampled at integer
  offsets and normalised."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f'blur kernel size must be odd and positive, got {size}')
  if size <= 7:
    return np.asarray(_CV2_SMALL_GAUSSIAN[size // 2])
  sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
  offsets = np.arange(size) - (size - 1) / 2
  kernel = np.exp(-np.square(offsets) / (2 * sigma**2))
  return kernel / kernel.sum()


def _gaussian_blur(heatmaps: jax.Array, size: int) -> jax.Array:
  """``cv2.GaussianBlur(map, (size, size), 0)`` of every (h, w) map of (..., h, w, K) heatmaps.

  The border is cv2's default ``BORDER_REFLECT_101`` (``dcb|abcd|cba``, the edge pixel not
  repeated), which is what ``post_dark_udp`` gets since it passes no border type; numpy's
  ``'reflect'`` pad mode is that same rule. The kernel is separable, so it runs as two 1-D passes.
  """
  kernel = _cv2_gaussian_kernel(size).astype(np.float32)
  radius = size // 2
  h, w = heatmaps.shape[-3:-1]
  lead = [(0, 0)] * (heatmaps.ndim - 3)
  rows = jnp.pad(heatmaps, [*lead, (radius, radius), (0, 0), (0, 0)], mode='reflect')
  heatmaps = sum(c * rows[..., i:i + h, :, :] for i, c in enumerate(kernel))
  cols = jnp.pad(heatmaps, [*lead, (0, 0), (radius, radius), (0, 0)], mode='reflect')
  return sum(c * cols[..., i:i + w, :] for i, c in enumerate(kernel))


def decode_heatmaps(heatmaps: jax.Array, *, blur_kernel_size: int) -> tuple[jax.Array, jax.Array]:
  """Keypoints from heatmaps by argmax and one DARK-UDP Newton step; jit-able, any leading dims.

  mmpose 0.x ``keypoints_from_heatmaps(..., post_process='default', use_udp=True)``, i.e.
  ``_get_max_preds`` then ``post_dark_udp(coords, heatmaps, kernel)``
  (``mmpose/core/evaluation/top_down_eval.py``): each map is blurred like
  ``cv2.GaussianBlur((k, k), 0)``, clipped to [0.001, 50], logged and edge-padded by one pixel;
  the gradient and Hessian of the log map at the argmax come from central differences, and the
  coordinates move by ``−(H + ε·I)⁻¹ ∇`` with ε the float32 machine epsilon. A Gaussian's log
  is a paraboloid, so on a clean Gaussian target the step lands on its sub-pixel centre, to
  within 0.05 input-crop pixels when it lies at least 5 heatmap pixels inside the map. Nearer the
  border the blur's reflection pulls the peak towards the edge (by over a heatmap pixel for a
  σ = 2 target 1–2 pixels in); that bias is the reference's, and is kept.

  Scores are the maxima of the maps as given, before blurring. Where a map's maximum is ≤ 0 the
  reference marks the argmax −1 and then refines from indices outside that map; here such
  keypoints keep their unrefined argmax instead (their score already says they are void).

  Args:
    heatmaps: (..., h, w, K) heatmaps.
    blur_kernel_size: odd Gaussian kernel size (mmpose's ``modulate_kernel``; 11 matches σ = 2).

  Returns:
    coords (..., K, 2) float32 (x, y) in heatmap pixels (integer values at pixel centres) and
    scores (..., K) float32.
  """
  heatmaps = jnp.asarray(heatmaps, jnp.float32)
  *lead, h, w, k = heatmaps.shape
  flat = heatmaps.reshape(*lead, h * w, k)
  index = jnp.argmax(flat, axis=-2)
  scores = jnp.max(flat, axis=-2)
  x, y = index % w, index // w

  log_maps = jnp.log(jnp.clip(_gaussian_blur(heatmaps, blur_kernel_size), 0.001, 50.0))
  padded = jnp.pad(log_maps, [(0, 0)] * len(lead) + [(1, 1), (1, 1), (0, 0)], mode='edge')
  padded = padded.reshape(*lead, (h + 2) * (w + 2), k)

  def at(dx: int, dy: int) -> jax.Array:
    """The padded log map at (x + dx, y + dy) of each keypoint's argmax, (..., K)."""
    flat_index = (y + 1 + dy) * (w + 2) + (x + 1 + dx)
    return jnp.take_along_axis(padded, flat_index[..., None, :], axis=-2)[..., 0, :]

  centre, right, left, down, up = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
  dx = 0.5 * (right - left)
  dy = 0.5 * (down - up)
  dxx = right - 2 * centre + left
  dyy = down - 2 * centre + up
  dxy = 0.5 * (at(1, 1) - right - down + 2 * centre - left - up + at(-1, -1))
  # (H + εI)⁻¹ of the symmetric 2×2 Hessian in closed form, applied to the gradient.
  eps = float(np.finfo(np.float32).eps)
  hxx, hyy = dxx + eps, dyy + eps
  det = hxx * hyy - dxy * dxy
  step = jnp.stack([(hyy * dx - dxy * dy) / det, (hxx * dy - dxy * dx) / det], axis=-1)

  argmax = jnp.stack([x, y], axis=-1).astype(jnp.float32)
  coords = jnp.where(scores[..., None] > 0, argmax - step, argmax)
  return coords, scores


def heatmap_to_crop(
    coords: np.ndarray | jax.Array,
    *,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
) -> np.ndarray | jax.Array:
  """(..., 2) (x, y) heatmap pixels → input-crop pixels by the UDP scale ``(in − 1)/(hm − 1)``
  per axis, the inverse of the mapping in :func:`udp_targets`. Sizes are (H, W)."""
  (in_h, in_w), (hm_h, hm_w) = image_size, heatmap_size
  return coords * np.array([(in_w - 1) / (hm_w - 1), (in_h - 1) / (hm_h - 1)], np.float32)


def crop_to_image(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    rotation: np.ndarray | float,
    *,
    image_size: tuple[int, int],
) -> np.ndarray:
  """Maps (..., K, 2) (x, y) input-crop pixels back to source-image pixels (numpy).

  The exact inverse of ``data.transforms.udp_warp_matrix(center, scale, rotation, image_size)``:
  undo the crop's centring, its per-axis scale ``(W − 1)/scale_w``, ``(H − 1)/scale_h`` and then
  its rotation. With rotation 0 this is mmpose 0.x ``transform_preds(..., use_udp=True)`` (applied
  there straight to heatmap coordinates, which :func:`heatmap_to_crop` composes to the same map),
  with ``scale`` in pixels rather than in units of 200.

  Args:
    coords: (..., K, 2) (x, y) in crop pixels.
    center: (..., 2) (x, y) crop centres in source pixels.
    scale: (..., 2) (w, h) crop box sizes in source pixels.
    rotation: (...) crop rotations in degrees, as the sample's ``rotation``.
    image_size: model input (H, W).

  Returns:
    (..., K, 2) (x, y) source-image pixels, float32 for float32 coordinates (float64 for float64).
  """
  dtype = np.result_type(np.asarray(coords).dtype, np.float32)
  in_h, in_w = image_size
  size = np.array([in_w - 1.0, in_h - 1.0])
  center = np.asarray(center, np.float64)[..., None, :]
  scale = np.asarray(scale, np.float64)[..., None, :]
  theta = np.deg2rad(np.asarray(rotation, np.float64))[..., None]
  # Back to the unrotated box, relative to its centre, in source pixels.
  u, v = np.moveaxis((np.asarray(coords, np.float64) - size / 2) * scale / size, -1, 0)
  cos, sin = np.cos(theta), np.sin(theta)
  # The transpose of the warp's rotation [[cos, −sin], [sin, cos]] undoes it.
  points = np.stack([cos * u + sin * v, -sin * u + cos * v], axis=-1) + center
  return points.astype(dtype)


def flip_images(images: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
  """Mirrors a (..., H, W, C) batch along W: pixel x → W − 1 − x.

  Under the pixel-centre convention the mirror of a UDP crop is exactly the UDP crop of the
  mirrored image (the box centre x → W_img − 1 − x, the crop's first and last pixel centres
  swapped), so heatmaps predicted from it only need mirroring back, with no 1-pixel shift.
  """
  return images[..., ::-1, :]


def flip_heatmaps_back(
    heatmaps: np.ndarray | jax.Array, flip_index: Sequence[int]
) -> np.ndarray | jax.Array:
  """The (..., h, w, K) heatmaps of a flipped crop, in the frame of the unflipped crop.

  mmpose 0.x ``flip_back``: channel i takes channel ``flip_index[i]`` (left ↔ right) and each map
  is mirrored along w (x → w − 1 − x). ViTPose's UDP configs set ``shift_heatmap=False``: the
  flipped crop is the crop of the flipped image (see :func:`flip_images`) and UDP maps the first
  and last pixel centres of the crop onto those of the heatmap, so the mirror is exact.
  """
  return heatmaps[..., ::-1, :][..., np.asarray(flip_index)]


def flip_test_average(
    heatmaps: np.ndarray | jax.Array,
    flipped_heatmaps: np.ndarray | jax.Array,
    flip_index: Sequence[int],
) -> np.ndarray | jax.Array:
  """Flip-test heatmaps: the mean of the (..., h, w, K) heatmaps of a crop and those of its
  mirror (the model's output on :func:`flip_images` of the crop) mapped back."""
  return 0.5 * (heatmaps + flip_heatmaps_back(flipped_heatmaps, flip_index))


@dataclasses.dataclass(frozen=True)
class UDPHeatmap:
  """A model's heatmap codec: UDP Gaussian targets and DARK-UDP decoding with one set of values.

  mmpose 1.x ``UDPHeatmap(input_size, heatmap_size, sigma, blur_kernel_size)`` with the same
  defaults, except that sizes here are (H, W), the project's convention (mmpose writes (w, h)).
  ``sigma`` is in pixels of this heatmap size: σ 2 at 64×48 is ViTPose's; a codec for larger
  heatmaps scales it (Sapiens uses σ 6 at 256×192). ``blur_kernel_size`` is the odd kernel of
  the decoding blur (mmpose 0.x ``modulate_kernel``: 11 with σ 2, 17 with σ 3 in its UDP recipes).
  ValueError names the field for sizes that are not two integers ≥ 2, a σ that is not a positive
  number, or a kernel size that is not odd and positive.
  """

  input_size: tuple[int, int]
  heatmap_size: tuple[int, int]
  sigma: float = 2.0
  blur_kernel_size: int = 11

  def __post_init__(self):
    for name in ('input_size', 'heatmap_size'):
      size = getattr(self, name)
      if not (isinstance(size, Sequence) and len(size) == 2
              and all(isinstance(v, (int, np.integer)) and v >= 2 for v in size)):
        raise ValueError(f'codec {name} {size!r} is not (H, W) integers >= 2')
      object.__setattr__(self, name, tuple(int(v) for v in size))
    if not (isinstance(self.sigma, (int, float)) and np.isfinite(self.sigma) and self.sigma > 0):
      raise ValueError(f'codec sigma {self.sigma!r} is not a positive number')
    object.__setattr__(self, 'sigma', float(self.sigma))
    kernel = self.blur_kernel_size
    if not (isinstance(kernel, (int, np.integer)) and kernel > 0 and kernel % 2):
      raise ValueError(f'codec blur_kernel_size {kernel!r} is not an odd positive integer')
    object.__setattr__(self, 'blur_kernel_size', int(kernel))

  def encode(self, keypoints: jax.Array,
             keypoint_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Input-crop keypoints (..., K, 2) (x, y) and their weights (..., K) → targets
    (..., h, w, K) and weights (..., K) (:func:`udp_targets`)."""
    return udp_targets(keypoints, keypoint_weights, image_size=self.input_size,
                       heatmap_size=self.heatmap_size, sigma=self.sigma)

  def decode(self, heatmaps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(..., h, w, K) heatmaps → keypoints (..., K, 2) float32 (x, y) in input-crop pixels and
    scores (..., K) float32 (:func:`decode_heatmaps`, :func:`heatmap_to_crop`); jit-able.
    ValueError when the maps are not ``heatmap_size``."""
    if tuple(heatmaps.shape[-3:-1]) != self.heatmap_size:
      raise ValueError(f'heatmaps {tuple(heatmaps.shape)} do not match the codec heatmap_size '
                       f'{self.heatmap_size}')
    coords, scores = decode_heatmaps(heatmaps, blur_kernel_size=self.blur_kernel_size)
    return heatmap_to_crop(coords, image_size=self.input_size,
                           heatmap_size=self.heatmap_size), scores

  def to_dict(self) -> dict[str, Any]:
    """The ``codec`` entry of ``model.json``."""
    return {'type': 'UDPHeatmap', 'input_size': list(self.input_size),
            'heatmap_size': list(self.heatmap_size), 'sigma': self.sigma,
            'blur_kernel_size': self.blur_kernel_size}

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> UDPHeatmap:
    """The inverse of :meth:`to_dict`; ValueError names an unknown type or field."""
    data = dict(data)
    kind = data.pop('type', None)
    if kind != 'UDPHeatmap':
      raise ValueError(f'codec type {kind!r} is not UDPHeatmap')
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
      raise ValueError(f'codec: unknown field(s) {unknown}')
    missing = sorted({'input_size', 'heatmap_size'} - set(data))
    if missing:
      raise ValueError(f'codec: missing field(s) {missing}')
    return cls(**data)
