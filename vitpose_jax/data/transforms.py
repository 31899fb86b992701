"""Top-down pose transforms: pure numpy/PIL helpers and thin grain transforms over them.

A sample is a dict per person instance. In: ``image`` uint8 (H, W, 3) RGB, as an array or as an
RGB PIL image (the packed sources' form: it goes into the crop's warp as it is); ``center``
float32 (2,) (x, y) and ``scale`` float32 (2,) (w, h) in pixels (the box padded and at the
model's aspect); ``bbox`` float32 (4,) [x, y, w, h]; ``keypoints`` float32 (K, 2) [x, y] and
``keypoints_visible`` float32 (K,), COCO's v: 2 visible, 1 occluded, 0 unlabelled (mmpose 1.x's
names). Out (after :class:`AffineCrop`): ``image`` uint8 (H_in, W_in, 3) RGB array;
``keypoints`` (K, 2) in crop pixels, ``keypoints_visible`` as it came, and ``keypoint_weights``
float32 (K,), 1 where labelled (the loss weight); ``center``, ``scale``, ``rotation`` (float32
degrees) of the crop that was taken. Keys a transform does not know pass through untouched, and
no transform mutates its input (a grain source may hand out the same dict again).

The crops stay uint8: the model normalises them (``(x − IMAGENET_MEAN) / IMAGENET_STD``, see
:class:`vitpose_jax.models.VitPose`) on the device, so the host neither spends a float pass on
every pixel nor ships four times the bytes.

Coordinates are pixels, x right, y down, integer values at pixel centres (COCO/mmpose). Sizes
passed as arguments are (H, W); points, centres and scales are (x, y) / (w, h).

The order and the defaults are the official ViTPose ones (mmpose 0.x ``TopDownRandomFlip`` →
``TopDownHalfBodyTransform`` → ``TopDownGetRandomScaleRotation`` → ``TopDownAffine(use_udp=True)``
→ normalise, here on the device), with the dataset's centre jitter (``_xywh2cs``) first, where
mmpose applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from vitpose_jax.data.coco import decode_segmentation
from vitpose_jax.skeletons import Schema

Sample = dict[str, Any]

# RGB in 0-255; applied by the model to uint8 input (VitPose), and what "normalised" means for
# float input anywhere (export, raw prediction).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# ITU-R 601 luma, PIL's ``convert('L')`` weights, for contrast and saturation jitter.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentation settings; the defaults are ViTPose's COCO recipe.

  Attributes:
    flip_prob: probability of a horizontal flip.
    half_body_prob: probability of the half-body crop, tried only on instances with more than
      ``half_body_min_joints`` labelled keypoints (mmpose's ``num_joints_half_body``).
    half_body_min_joints: see ``half_body_prob``.
    half_body_upper_prob: probability of preferring the upper body. mmpose 0.x tests
      ``np.random.randn() < 0.5``, i.e. Φ(0.5) ≈ 0.69 (mmpose 1.x's ``upper_prioritized_prob``
      is 0.7).
    half_body_padding: the half-body box is the chosen joints' extent at the model's aspect,
      times this.
    scale_factor: the scale is multiplied by ``clip(N(0, 1)·f + 1, 1 − f, 1 + f)``.
    rotation_factor: rotation in degrees ``clip(N(0, 1)·f, −2f, 2f)`` ...
    rotation_prob: ... applied with this probability, otherwise 0.
    jitter_prob: probability of shifting the centre by ``jitter_factor · (u − 0.5) · (w, h)``,
      u ~ U(0, 1) per axis and (w, h) the raw ``bbox`` size: up to ±0.2 box sizes (official
      ``_xywh2cs``).
    jitter_factor: see ``jitter_prob``.
    brightness: colour jitter: pixel values times U(1 − b, 1 + b) (0 disables, the default).
    contrast: colour jitter: blend with the mean grey by U(1 − c, 1 + c) (0 disables).
    saturation: colour jitter: blend with the grey image by U(1 − s, 1 + s) (0 disables).
    blur: strong augmentation: with probability 0.5 a Gaussian blur of the crop, its sigma
      U(0, blur) in crop pixels (0 disables, the default).
    noise: strong augmentation: additive Gaussian pixel noise, its std U(0, noise) in 0-255 units
      (0 disables, the default).
  """

  flip_prob: float = 0.5
  half_body_prob: float = 0.3
  half_body_min_joints: int = 8
  half_body_upper_prob: float = 0.6914624612740131
  half_body_padding: float = 1.5
  scale_factor: float = 0.5
  rotation_factor: float = 40.0
  rotation_prob: float = 0.6
  jitter_prob: float = 0.3
  jitter_factor: float = 0.4
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  blur: float = 0.0
  noise: float = 0.0

  @property
  def color_jitter(self) -> bool:
    return self.brightness > 0 or self.contrast > 0 or self.saturation > 0

  @property
  def blur_noise(self) -> bool:
    return self.blur > 0 or self.noise > 0

  @property
  def deterministic(self) -> bool:
    """True when no step draws anything: every crop of an instance is the same image."""
    return not (self.flip_prob > 0 or self.half_body_prob > 0 or self.scale_factor > 0
                or (self.rotation_prob > 0 and self.rotation_factor > 0)
                or (self.jitter_prob > 0 and self.jitter_factor > 0)
                or self.color_jitter or self.blur_noise)


# ---- Pure helpers ----------------------------------------------------------------------------


def hflip_keypoints(keypoints: np.ndarray, flip_index: Sequence[int], width: int) -> np.ndarray:
  """Mirrors (K, 2) [x, y] keypoints (further columns ride along) in an image ``width`` pixels
  wide: x → width − 1 − x, and output keypoint i takes input ``flip_index[i]`` (left ↔ right)."""
  out = keypoints[np.asarray(flip_index)].copy()
  out[:, 0] = width - 1 - out[:, 0]
  return out


def half_body_box(
    points: np.ndarray, aspect_ratio: float, padding: float
) -> tuple[np.ndarray, np.ndarray]:
  """Centre and scale of a half-body crop around (N, 2) (x, y) points (mmpose 0.x
  ``half_body_transform``): the centre is the points' mean, the box their extent grown to
  ``aspect_ratio`` (w / h), then times ``padding``."""
  center = points.mean(axis=0)
  w, h = points.max(axis=0) - points.min(axis=0)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  return center.astype(np.float32), np.array([w, h], np.float32) * np.float32(padding)


def udp_warp_matrix(
    center: np.ndarray, scale: np.ndarray, rotation: float, output_size: tuple[int, int]
) -> np.ndarray:
  """The UDP crop as a (2, 3) float64 affine map from source to crop pixel coordinates.

  mmpose's ``get_warp_matrix(rotation, center * 2, output_size − 1, scale)``: the box of size
  ``scale`` (w, h) centred at ``center`` (x, y), rotated by ``rotation`` degrees (positive turns
  the content clockwise on screen, y being down, as mmpose's matrix does), spans the crop from
  the first pixel centre to the last, (0, 0) … (W_out − 1, H_out − 1); ``output_size`` is
  (H_out, W_out). Like every coordinate here, both sides use the pixel-centre convention.
  """
  theta = np.deg2rad(rotation)
  cos, sin = np.cos(theta), np.sin(theta)
  out_h, out_w = output_size
  sx, sy = (out_w - 1.0) / float(scale[0]), (out_h - 1.0) / float(scale[1])
  linear = np.array([[cos * sx, -sin * sx], [sin * sy, cos * sy]])
  offset = np.array([(out_w - 1.0) / 2, (out_h - 1.0) / 2]) - linear @ np.asarray(center, float)
  return np.concatenate([linear, offset[:, None]], axis=1)


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Applies a (2, 3) affine matrix to (..., 2) (x, y) points."""
  return points @ matrix[:, :2].T + matrix[:, 2]


def image_hw(image: np.ndarray | Image.Image) -> tuple[int, int]:
  """(H, W) of a sample's image, array or PIL."""
  if isinstance(image, Image.Image):
    return image.height, image.width
  return image.shape[0], image.shape[1]


def crop_matrix(element: Sample, image_size: tuple[int, int]) -> np.ndarray:
  """The (3, 3) float64 homogeneous map from a sample's source image pixels to its crop's, as
  :class:`AffineCrop` reads the image: :func:`udp_warp_matrix` of ``center``, ``scale`` and
  ``rotation`` (0 when absent), after the mirror x → W − 1 − x when ``flipped`` is set
  (:func:`flip_sample` mirrors the sample's coordinates, not its pixels). ``image_size`` is the
  crop's (H, W)."""
  rotation = np.float32(element.get('rotation', 0.0))
  matrix = np.vstack([udp_warp_matrix(element['center'], element['scale'], rotation, image_size),
                      [0.0, 0.0, 1.0]])
  if element.get('flipped', False):
    width = image_hw(element['image'])[1]
    matrix = matrix @ np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  return matrix


def warp_image(image: np.ndarray | Image.Image, matrix: np.ndarray,
               output_size: tuple[int, int]) -> np.ndarray:
  """Warps a uint8 (H, W, C) image (array or PIL) by a (2, 3) source→output affine matrix in
  pixel-centre coordinates, sampling bilinearly; output (H_out, W_out, C) array with
  ``output_size`` (H_out, W_out) and zeros where the source has no pixels (as
  ``cv2.warpAffine``'s constant border).

  PIL's ``AFFINE`` takes the output→source map in pixel-corner coordinates (it samples the source
  at ``A·(p + 0.5) + t`` for output pixel p and reads pixel q's value at q + 0.5), so the
  centre-convention inverse ``A·p + t`` becomes ``A·p_c + (t + 0.5 − A·(0.5, 0.5))``.
  """
  full = np.vstack([matrix, [0.0, 0.0, 1.0]])
  inverse = np.linalg.inv(full)[:2]
  linear, t = inverse[:, :2], inverse[:, 2]
  t_corner = t + 0.5 - linear @ np.array([0.5, 0.5])
  coeffs = (linear[0, 0], linear[0, 1], t_corner[0], linear[1, 0], linear[1, 1], t_corner[1])
  out_h, out_w = output_size
  source = image if isinstance(image, Image.Image) else Image.fromarray(image)
  warped = source.transform(
      (out_w, out_h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
  return np.asarray(warped)


def color_jitter(
    image: np.ndarray, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
  """Scales brightness, contrast and saturation of a uint8 (H, W, 3) RGB image by the given
  factors (1 = unchanged), in that fixed order, each as torchvision's ``adjust_*`` defines it."""
  x = image.astype(np.float32) * brightness
  x = np.clip(x, 0, 255)
  grey_mean = float((x @ _LUMA).mean())
  x = np.clip(grey_mean + contrast * (x - grey_mean), 0, 255)
  grey = (x @ _LUMA)[..., None]
  x = np.clip(grey + saturation * (x - grey), 0, 255)
  return np.round(x).astype(np.uint8)


# ---- grain transforms ------------------------------------------------------------------------


class CentreJitter(grain.transforms.RandomMap):
  """With ``jitter_prob``, shifts ``center`` by ``jitter_factor · (u − 0.5) · (w, h)``, u ~ U(0, 1)
  per axis and (w, h) the sample's raw ``bbox`` size (official ``_xywh2cs``). mmpose draws this
  once when it loads the annotations; here it is redrawn every time the sample is read."""

  def __init__(self, config: AugmentConfig = AugmentConfig()):
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    if rng.random() >= self.config.jitter_prob:
      return element
    box_size = np.asarray(element['bbox'], np.float32)[2:4]
    shift = self.config.jitter_factor * (rng.random(2) - 0.5) * box_size
    return {**element, 'center': (element['center'] + shift).astype(np.float32)}


class RandomFlip(grain.transforms.RandomMap):
  """With ``flip_prob``, mirrors the sample horizontally (see :func:`flip_sample`)."""

  def __init__(self, schema: Schema, config: AugmentConfig = AugmentConfig()):
    self.flip_index = schema.flip_index
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    if rng.random() >= self.config.flip_prob:
      return element
    return flip_sample(element, self.flip_index)


def flip_sample(element: Sample, flip_index: Sequence[int]) -> Sample:
  """The horizontal mirror of a sample, x → W − 1 − x: keypoints (left ↔ right by
  ``flip_index``, their ``keypoints_visible`` and any ``keypoint_weights`` with them), ``center``
  and ``bbox`` are mirrored, other keys pass through. A flip is its own inverse.

  The pixels are not copied: ``flipped`` (bool) is toggled instead, and :class:`AffineCrop`
  composes the mirror into its warp, which costs nothing where a mirrored copy of the whole
  source image would.
  """
  width = image_hw(element['image'])[1]
  out = {**element, 'flipped': not element.get('flipped', False),
         'keypoints': hflip_keypoints(element['keypoints'], flip_index, width)}
  for key in ('keypoints_visible', 'keypoint_weights'):
    if key in element:
      out[key] = np.asarray(element[key])[np.asarray(flip_index)]
  center = np.array(element['center'], np.float32)
  center[0] = width - 1 - center[0]
  out['center'] = center
  if 'bbox' in element:
    bbox = np.array(element['bbox'], np.float32)
    bbox[0] = width - 1 - bbox[0] - bbox[2]
    out['bbox'] = bbox
  return out


class HalfBody(grain.transforms.RandomMap):
  """mmpose 0.x ``TopDownHalfBodyTransform``: on instances with more than
  ``half_body_min_joints`` labelled keypoints, with ``half_body_prob``, re-centres the crop on the
  labelled upper-body or lower-body keypoints (schema ``upper_body_ids`` / ``lower_body_ids``).

  The upper body is taken with ``half_body_upper_prob`` when it has more than two labelled
  keypoints, else the lower body when it has more than two, else the upper body; fewer than two
  chosen keypoints leave the sample unchanged.
  """

  def __init__(self, schema: Schema, image_size: tuple[int, int] = (256, 192),
               config: AugmentConfig = AugmentConfig()):
    self.upper = np.asarray(schema.upper_body_ids, np.int64)
    self.lower = np.asarray(schema.lower_body_ids, np.int64)
    self.aspect_ratio = image_size[1] / image_size[0]
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    keypoints = element['keypoints']
    labelled = element['keypoints_visible'] > 0
    if labelled.sum() <= self.config.half_body_min_joints:
      return element
    if rng.random() >= self.config.half_body_prob:
      return element
    upper = keypoints[self.upper[labelled[self.upper]]]
    lower = keypoints[self.lower[labelled[self.lower]]]
    prefer_upper = rng.random() < self.config.half_body_upper_prob
    if prefer_upper and len(upper) > 2:
      chosen = upper
    elif len(lower) > 2:
      chosen = lower
    else:
      chosen = upper
    if len(chosen) < 2:
      return element
    center, scale = half_body_box(chosen, self.aspect_ratio, self.config.half_body_padding)
    return {**element, 'center': center, 'scale': scale}


class RandomScaleRotation(grain.transforms.RandomMap):
  """mmpose 0.x ``TopDownGetRandomScaleRotation``: ``scale`` times
  ``clip(N(0, 1)·sf + 1, 1 − sf, 1 + sf)``; ``rotation`` (float32 degrees) is
  ``clip(N(0, 1)·rf, −2rf, 2rf)`` with ``rotation_prob``, else 0."""

  def __init__(self, config: AugmentConfig = AugmentConfig()):
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    sf, rf = self.config.scale_factor, self.config.rotation_factor
    s = np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
    r = np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)
    if rng.random() >= self.config.rotation_prob:
      r = 0.0
    return {**element, 'scale': (element['scale'] * s).astype(np.float32),
            'rotation': np.float32(r)}


class AffineCrop(grain.transforms.Map):
  """The UDP crop (mmpose ``TopDownAffine(use_udp=True)``): warps the image bilinearly and the
  keypoints by the same :func:`udp_warp_matrix` of ``center``, ``scale`` and ``rotation`` (0 when
  absent); the image is read mirrored where ``flipped`` is set (see :func:`flip_sample`).

  ``keypoints`` move into the crop, and ``keypoint_weights`` is 1 where labelled
  (``keypoints_visible`` > 0), whether or not they land inside it: as in mmpose, the codec's
  overlap rule decides which far-away keypoints stop counting; a sample without ``keypoints`` (an
  inference crop) gets neither. ``bbox``, ``flipped`` and the source image's ``segmentation``
  are dropped: the crop's ``center``, ``scale`` and ``rotation`` describe it from here on (and
  batches keep their fixed keys whether or not an instance has a mask).
  """

  def __init__(self, image_size: tuple[int, int] = (256, 192)):
    self.image_size = tuple(image_size)

  def map(self, element: Sample) -> Sample:
    rotation = np.float32(element.get('rotation', 0.0))
    matrix = udp_warp_matrix(element['center'], element['scale'], rotation, self.image_size)
    out = {k: v for k, v in element.items() if k not in ('bbox', 'flipped', 'segmentation')}
    if 'keypoints' in element:
      out['keypoints'] = warp_points(
          np.asarray(element['keypoints'], np.float64), matrix).astype(np.float32)
      out['keypoint_weights'] = (np.asarray(element['keypoints_visible']) > 0).astype(np.float32)
    image = warp_image(element['image'], crop_matrix(element, self.image_size)[:2],
                       self.image_size)
    out.update(image=image, rotation=rotation)
    return out


class ColorJitter(grain.transforms.RandomMap):
  """Random brightness, contrast and saturation (see :func:`color_jitter`) of the uint8 image,
  each factor U(max(0, 1 − f), 1 + f) for the config's f (brightness, contrast, saturation)."""

  def __init__(self, config: AugmentConfig):
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    factors = [rng.uniform(max(0.0, 1 - f), 1 + f) for f in
               (self.config.brightness, self.config.contrast, self.config.saturation)]
    return {**element, 'image': color_jitter(element['image'], *factors)}


class BlurNoise(grain.transforms.RandomMap):
  """Strong augmentation of the uint8 crop: with probability 0.5 a Gaussian blur of sigma
  U(0, ``blur``) crop pixels, then additive Gaussian noise of std U(0, ``noise``) (0-255 units),
  rounded and clipped to uint8; a factor of 0 disables its part."""

  def __init__(self, config: AugmentConfig):
    self.config = config

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    image = element['image']
    if self.config.blur > 0 and rng.random() < 0.5:
      sigma = rng.uniform(0.0, self.config.blur)
      # PIL's blur (radius = sigma) beat scipy.ndimage.gaussian_filter at 128x96: 1.0 vs 1.5 ms.
      image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))
    if self.config.noise > 0:
      std = rng.uniform(0.0, self.config.noise)
      noisy = image + rng.standard_normal(image.shape, np.float32) * np.float32(std)
      image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return {**element, 'image': image}


def train_transforms(
    schema: Schema, image_size: tuple[int, int] = (256, 192),
    config: AugmentConfig = AugmentConfig(),
) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
  """The training transforms in order, for ``MapDataset.seed(s).apply(...)``: centre jitter,
  flip, half-body, scale/rotation, crop, colour jitter and blur/noise (each only when enabled).
  The crops stay uint8 (the model normalises them)."""
  transforms = [
      CentreJitter(config),
      RandomFlip(schema, config),
      HalfBody(schema, image_size, config),
      RandomScaleRotation(config),
      AffineCrop(image_size),
  ]
  if config.color_jitter:
    transforms.append(ColorJitter(config))
  if config.blur_noise:
    transforms.append(BlurNoise(config))
  return transforms


class TwoViews(grain.transforms.RandomMap):
  """Two crops of one instance for mean-teacher training, replacing the whole train transform
  list: a WEAK view (the teacher's input) drawn with ``weak`` and a STRONG view (the student's)
  drawn with ``strong``, each its own random draw of :func:`train_transforms`' steps (half-body
  acts only on labelled instances, as always).

  Out: the strong view's sample as :class:`AffineCrop` and the pixel steps leave it (``image``
  uint8 (H, W, 3), ``keypoints`` (K, 2) in its crop pixels, ``keypoints_visible`` and
  ``keypoint_weights`` (K,) in its order, all zero for unlabelled instances, ``center``,
  ``scale``, ``rotation``, the record's other keys), and:

  - ``image_weak`` uint8 (H, W, 3): the weak view.
  - ``view_transform`` float32 (3, 3): the homogeneous affine from weak-view crop pixels to
    strong-view crop pixels (pixel centres), mirrors included: each view's image→crop map is
    :func:`crop_matrix`.
  - ``view_flip`` float32 (): 1 when exactly one view is mirrored, else 0; then keypoint (or
    heatmap channel) i of the weak view is keypoint ``flip_index[i]`` of the strong view.
  - ``mask_distance`` float32 (H, W): per strong-view crop pixel, the Euclidean distance in crop
    pixels to the nearest pixel of the instance's mask warped into that crop (0 on the mask);
    ``mask_weight`` float32 (): 1 when the instance has a ``segmentation`` whose warped mask is
    not empty, else 0 (and ``mask_distance`` all 0).
  """

  def __init__(self, schema: Schema, image_size: tuple[int, int], weak: AugmentConfig,
               strong: AugmentConfig):
    self.image_size = tuple(image_size)
    self.crop = AffineCrop(self.image_size)
    self.views = []
    for config in (weak, strong):
      # (the random steps before the crop, those after it): the crop is taken here, where its
      # matrix is known.
      steps = train_transforms(schema, self.image_size, config)
      at = next(i for i, t in enumerate(steps) if isinstance(t, AffineCrop))
      self.views.append((steps[:at], steps[at + 1:]))

  def _view(self, view, element: Sample,
            rng: np.random.Generator) -> tuple[Sample, np.ndarray, bool]:
    """(the cropped view, its image→crop (3, 3) map, whether it is mirrored)."""
    before, after = view
    for t in before:
      element = t.random_map(element, rng)
    matrix, flipped = crop_matrix(element, self.image_size), element.get('flipped', False)
    out = self.crop.map(element)
    for t in after:
      out = t.random_map(out, rng)
    return out, matrix, flipped

  def _mask_distance(self, element: Sample, matrix: np.ndarray) -> tuple[np.ndarray, np.float32]:
    if 'segmentation' in element:
      mask = decode_segmentation(element['segmentation'], element['image_size'])
      warped = warp_image(mask * np.uint8(255), matrix[:2], self.image_size) >= 128
      if warped.any():
        return ndimage.distance_transform_edt(~warped).astype(np.float32), np.float32(1.0)
    return np.zeros(self.image_size, np.float32), np.float32(0.0)

  def random_map(self, element: Sample, rng: np.random.Generator) -> Sample:
    weak, weak_matrix, weak_flipped = self._view(self.views[0], element, rng)
    strong, strong_matrix, strong_flipped = self._view(self.views[1], element, rng)
    distance, weight = self._mask_distance(element, strong_matrix)
    return {**strong, 'image_weak': weak['image'],
            'view_transform': (strong_matrix @ np.linalg.inv(weak_matrix)).astype(np.float32),
            'view_flip': np.float32(weak_flipped != strong_flipped),
            'mask_distance': distance, 'mask_weight': weight}


def eval_transforms(
    schema: Schema, image_size: tuple[int, int] = (256, 192)
) -> list[grain.transforms.Map]:
  """The deterministic evaluation transforms: the crop at rotation 0, kept uint8 (the model
  normalises it).

  ``schema`` is unused by this step; it is taken so train and eval lists build alike.
  """
  del schema
  return [AffineCrop(image_size)]
