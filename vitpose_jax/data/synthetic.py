"""Synthetic multi-population pose data, written in COCO format so the real-data path reads it.

    python -m vitpose_jax.data.synthetic --out DIR --population adult --split train --num 500 \
        --seed 0 [--preview grid.png]

Populations and their schemas: ``adult`` → ``coco17``, ``adult_wholebody`` → ``coco_wholebody133``,
``infant`` → ``infant_smil25``, ``wheelchair`` → ``wheelchair23``. Each person is a small 3-D
figure: a forward-kinematics skeleton with population-specific proportions and sampled joint
angles, dressed in shaded tubes and ellipsoids (clothing patterns, hair, a face with drawn
features, five-fingered hands, shoes; for wheelchair users a wheelchair), seen orthographically
from a sampled viewpoint and z-buffered, so self-, mutual and occluder occlusion come from depth and
every label comes from the geometry that drew the pixels.

Output: ``DIR/annotations.json`` and ``DIR/images/000000000001.jpg`` … (JPEG quality 90, widths
320-512, heights 256-448). An image may hold several people, so there are at most ``num`` images.
The JSON holds ``info`` (generator_version, population, split, seed, schema), ``images`` (id,
file_name relative to ``DIR/images``, width, height), ``categories`` (one: id 1, 'person', the
schema's keypoint names, its links as 1-based index pairs) and ``annotations``: id, image_id,
category_id 1, iscrowd 0, bbox, area, segmentation, num_keypoints (labelled points, v > 0, over the
whole schema) and ``keypoints`` (flat K×3 [x, y, v]). Whole-body adults use COCO-WholeBody's
layout: ``keypoints`` holds the 17 body points and ``foot_kpts`` (6), ``face_kpts`` (68),
``lefthand_kpts`` and ``righthand_kpts`` (21 each) the rest, with ``face_box``, ``lefthand_box``,
``righthand_box`` ([x, y, w, h] around the part's labelled points, zeros when none) and
``face_valid``, ``lefthand_valid``, ``righthand_valid``, ``foot_valid`` (some point labelled);
:func:`vitpose_jax.data.coco.annotation_keypoints` assembles the 133.

Coordinates: pixels, x right and y down, integers at pixel centres (the COCO/mmpose convention):
pixel (row i, column j) has its centre at (x, y) = (j, i) and covers [j - 0.5, j + 0.5) ×
[i - 0.5, i + 0.5). A point is inside the image when 0 <= x <= width - 1 and 0 <= y <= height - 1.
``segmentation`` is COCO polygons of the instance's visible silhouette (a wheelchair user's
includes the chair), one per connected part, along half-integer pixel edges so that pycocotools
rasterises them back to the mask; holes are filled. ``bbox`` is pycocotools' ``toBbox`` of that
filled mask, [first column, first row, width, height] in whole pixels, and ``area`` its pixel count.
Visibility: 2 visible; 1 inside the image but covered (by a nearer part of the same body, another
person or an occluder); 0 outside the image, with x = y = 0.

Keypoints sit where a model should find them: joints inside the drawn limb at that joint, the 68
face landmarks (iBUG 300-W order) on the drawn jaw line, brows, eyes, nose and lips, the 21 hand
points on the drawn finger segments (an infant's ``hand_tip`` is the middle finger's middle
joint, the front of a fist), the six chair points on the drawn wheel hubs, tyre bottoms and
footrests. A person's LEFT keypoint is their anatomical left, so seen from behind it lies on the
image's left. Internal joints (shoulders, hips, the infant spine and head centre) are visible when
the body around them is the nearest surface there.

Generation is deterministic: image k draws from a NumPy Generator seeded by (seed, split,
population, k), so equal arguments give byte-identical files, and train and val differ.

Seeds: the val split at seed 0 is for checkpoint selection and tuning. Seeds from
``TEST_SEED_START`` (1000) on are reserved for final test numbers: they are never used for
training, checkpoint selection or tuning, and the trainer refuses a training or validation data
spec that names one. Reported test tables say which test seed they used.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from vitpose_jax import skeletons
from vitpose_jax.data import coco, render
from vitpose_jax.data.render import Material

# Synthetic seeds from here on are test seeds (see the module docstring).
TEST_SEED_START = 1000

# Enters the data cache key elsewhere: bump on any deliberate change to the generated data.
GENERATOR_VERSION = 1

POPULATIONS = {
    'adult': 'coco17',
    'adult_wholebody': 'coco_wholebody133',
    'infant': 'infant_smil25',
    'wheelchair': 'wheelchair23',
}
SPLITS = ('train', 'val')

IMAGE_DIR = 'images'
ANNOTATION_FILE = 'annotations.json'
JPEG_QUALITY = 90
WIDTH_RANGE = (320, 512)
HEIGHT_RANGE = (256, 448)

# Pixels of depth a keypoint may lie behind the nearest surface at its pixel and still count as
# visible, on top of its part's own thickness.
_DEPTH_TOLERANCE = 1.5
# A joint's slack as a multiple of the radius of the thickest part meeting there.
_JOINT_SLACK = 1.1
_SIDES = (('left', 1.), ('right', -1.))


# ---------------------------------------------------------------------------------------------
# Geometry. Body frame: x = the person's left, y = up, z = the person's forward; lengths are
# fractions of standing height (body units).


def _rx(deg: float) -> np.ndarray:
  """Rotation about the left axis: positive tilts up toward forward (leaning, nodding)."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[1., 0., 0.], [0., c, -s], [0., s, c]])


def _ry(deg: float) -> np.ndarray:
  """Rotation about the up axis: positive turns forward toward the person's left."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0., s], [0., 1., 0.], [-s, 0., c]])


def _rz(deg: float) -> np.ndarray:
  """Rotation about the forward axis: positive tilts down toward the person's left."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0.], [s, c, 0.], [0., 0., 1.]])


def _unit(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / (np.linalg.norm(v) + 1e-12)


_DOWN = np.array([0., -1., 0.])


@dataclasses.dataclass(frozen=True)
class _Build:
  """Body proportions in body units; radii pairs are (proximal, distal)."""

  head: float            # head half-width; the head is about 2.8 of these from chin to crown
  neck: float
  trunk: float           # pelvis centre to neck base
  shoulder: float        # half-distance between the shoulder joints
  shoulder_drop: float   # shoulder joints below the neck base
  hip: float             # half-distance between the hip joints
  hip_drop: float        # hip joints below the pelvis centre
  upper_arm: float
  forearm: float
  hand: float            # wrist to middle fingertip
  thigh: float
  shank: float
  foot: float            # heel to toe tip
  ankle: float           # ankle joint above the sole
  r_upper_arm: tuple[float, float]
  r_forearm: tuple[float, float]
  r_thigh: tuple[float, float]
  r_shank: tuple[float, float]
  r_neck: float
  r_shoulder: float
  r_foot: float
  pelvis_width: float    # torso half-widths at the pelvis and the chest
  chest_width: float
  depth_ratio: float     # torso half-depth / half-width
  face_shift: float      # face landmarks moved down (head units): infants' faces sit low
  face_scale: float
  chin: float            # radius of the head's lower end (head units): infants' cheeks are full
  infant: bool           # fainter brows


_ADULT = _Build(
    head=0.046, neck=0.045, trunk=0.30, shoulder=0.105, shoulder_drop=0.035, hip=0.055,
    hip_drop=0.03, upper_arm=0.186, forearm=0.146, hand=0.108, thigh=0.245, shank=0.246,
    foot=0.152, ankle=0.039, r_upper_arm=(0.031, 0.023), r_forearm=(0.023, 0.017),
    r_thigh=(0.058, 0.036), r_shank=(0.039, 0.022), r_neck=0.024, r_shoulder=0.032, r_foot=0.026,
    pelvis_width=0.085, chest_width=0.09, depth_ratio=0.62, face_shift=0., face_scale=1.,
    chin=0.64, infant=False,
)
_INFANT = _Build(
    head=0.098, neck=0.01, trunk=0.29, shoulder=0.095, shoulder_drop=0.03, hip=0.058,
    hip_drop=0.03, upper_arm=0.11, forearm=0.09, hand=0.07, thigh=0.15, shank=0.135,
    foot=0.12, ankle=0.03, r_upper_arm=(0.045, 0.036), r_forearm=(0.037, 0.03),
    r_thigh=(0.07, 0.052), r_shank=(0.05, 0.034), r_neck=0.045, r_shoulder=0.048, r_foot=0.032,
    pelvis_width=0.11, chest_width=0.12, depth_ratio=0.8, face_shift=0.25, face_scale=0.85,
    chin=0.76, infant=True,
)


def _vary(rng: np.random.Generator, build: _Build) -> _Build:
  """Per-person proportions: lengths jitter a few percent, girth by build."""
  girth = rng.uniform(0.85, 1.25)
  length = lambda v: float(v * rng.uniform(0.95, 1.05))
  wide = lambda v: float(v * girth * rng.uniform(0.95, 1.05))
  pair = lambda p: (wide(p[0]), wide(p[1]))
  return dataclasses.replace(
      build, upper_arm=length(build.upper_arm), forearm=length(build.forearm),
      thigh=length(build.thigh), shank=length(build.shank), trunk=length(build.trunk),
      shoulder=float(build.shoulder * rng.uniform(0.92, 1.1)), head=length(build.head),
      r_upper_arm=pair(build.r_upper_arm), r_forearm=pair(build.r_forearm),
      r_thigh=pair(build.r_thigh), r_shank=pair(build.r_shank), r_neck=wide(build.r_neck),
      pelvis_width=float(build.pelvis_width * girth * rng.uniform(0.9, 1.15)),
      chest_width=float(min(build.chest_width * np.sqrt(girth) * rng.uniform(0.95, 1.05),
                            0.9 * build.shoulder)),
  )


# ---------------------------------------------------------------------------------------------
# Poses: joint angles in degrees. Per-side names are prefixed 'l_' / 'r_'.

_SIDE_ANGLES = ('sh_flex', 'sh_abd', 'sh_rot', 'elbow', 'pron', 'wrist', 'wrist_dev', 'curl',
                'thumb', 'hip_flex', 'hip_abd', 'hip_rot', 'knee', 'ankle', 'toe_out')


def _neutral_pose() -> dict[str, float]:
  pose = {k: 0. for k in ('lean', 'bend', 'twist', 'head_yaw', 'head_pitch', 'head_roll',
                          'mouth', 'smile', 'brow')}
  for s in 'lr':
    pose.update({f'{s}_{k}': 0. for k in _SIDE_ANGLES})
  return pose


def _arm(rng: np.random.Generator, style: str) -> dict[str, float]:
  u = rng.uniform
  if style == 'down':
    a = {'sh_flex': u(-15, 25), 'sh_abd': u(4, 25), 'sh_rot': u(-10, 40), 'elbow': u(5, 45)}
  elif style == 'hip':
    a = {'sh_flex': u(-15, 10), 'sh_abd': u(35, 55), 'sh_rot': u(40, 70), 'elbow': u(85, 115)}
  elif style == 'raised':
    a = {'sh_flex': u(90, 175), 'sh_abd': u(0, 60), 'sh_rot': u(-30, 30), 'elbow': u(0, 60)}
  elif style == 'front':
    a = {'sh_flex': u(20, 90), 'sh_abd': u(-10, 30), 'sh_rot': u(10, 60), 'elbow': u(20, 120)}
  elif style == 'wave':
    a = {'sh_flex': u(-10, 30), 'sh_abd': u(60, 110), 'sh_rot': u(-90, -40), 'elbow': u(60, 130)}
  elif style == 'side':
    a = {'sh_flex': u(-20, 40), 'sh_abd': u(45, 100), 'sh_rot': u(-20, 30), 'elbow': u(0, 40)}
  else:
    raise ValueError(style)
  a.update(pron=u(-30, 90), wrist=u(-30, 50), wrist_dev=u(-15, 15), curl=u(0, 1), thumb=u(0, 1))
  return a


def _leg(rng: np.random.Generator, style: str, phase: float = 0.) -> dict[str, float]:
  u = rng.uniform
  if style == 'stand':
    g = {'hip_flex': u(-5, 15), 'hip_abd': u(0, 12), 'hip_rot': u(0, 25), 'knee': u(0, 15),
         'ankle': u(-10, 10)}
  elif style == 'walk':
    swing = np.sin(phase)
    g = {'hip_flex': 5 + 20 * swing, 'hip_abd': u(0, 6), 'hip_rot': u(0, 15),
         'knee': 5 + 45 * max(0., np.sin(phase + 1.2)) + u(0, 8), 'ankle': -10 * swing}
  elif style == 'sit':
    g = {'hip_flex': u(70, 105), 'hip_abd': u(0, 20), 'hip_rot': u(-10, 25), 'knee': u(60, 110),
         'ankle': u(-15, 15)}
  elif style == 'squat':
    g = {'hip_flex': u(90, 130), 'hip_abd': u(10, 35), 'hip_rot': u(0, 30), 'knee': u(100, 140),
         'ankle': u(-30, -10)}
  else:
    raise ValueError(style)
  g.update(toe_out=u(0, 20))
  return g


def _adult_pose(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """A standing, walking, reaching, sitting or squatting adult; returns (pose, kind)."""
  pose = _neutral_pose()
  kind = ('stand', 'walk', 'reach', 'sit', 'squat')[
      rng.choice(5, p=[0.32, 0.25, 0.18, 0.17, 0.08])]
  arm_styles = ('down', 'hip', 'raised', 'front', 'wave', 'side')
  arm_p = [0.4, 0.12, 0.1, 0.18, 0.08, 0.12]
  phase = rng.uniform(0, 2 * np.pi)
  for s, sign in (('l', 1.), ('r', -1.)):
    style = arm_styles[rng.choice(6, p=arm_p)]
    arm = _arm(rng, style)
    if kind == 'walk' and style == 'down':
      arm['sh_flex'] = -20 * sign * np.sin(phase) + rng.uniform(-5, 5)
    if kind == 'reach' and (s == 'l') == (rng.random() < 0.5):
      arm = _arm(rng, 'raised' if rng.random() < 0.5 else 'front')
      arm['elbow'] = rng.uniform(0, 35)
    leg = _leg(rng, 'stand' if kind == 'reach' else kind, phase + (np.pi if s == 'r' else 0.))
    pose.update({f'{s}_{k}': float(v) for k, v in {**arm, **leg}.items()})
  pose.update(lean=rng.uniform(-5, 12) + (rng.uniform(5, 25) if kind == 'squat' else 0.),
              bend=rng.uniform(-8, 8), twist=rng.uniform(-15, 15))
  _face_pose(rng, pose)
  return pose, kind


def _face_pose(rng: np.random.Generator, pose: dict[str, float], yaw=45., pitch=(-15., 25.)):
  pose.update(head_yaw=rng.uniform(-yaw, yaw), head_pitch=rng.uniform(*pitch),
              head_roll=rng.uniform(-12, 12), mouth=rng.uniform(0, 1) ** 2,
              smile=rng.uniform(-0.3, 1), brow=rng.uniform(-0.5, 1))


def _infant_pose(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """Supine or prone infant poses with flexed, abducted limbs (MINI-RGBD-like)."""
  pose = _neutral_pose()
  kind = ('supine', 'prone', 'side')[rng.choice(3, p=[0.68, 0.2, 0.12])]
  u = rng.uniform
  for s in 'lr':
    if kind == 'prone':
      leg = {'hip_flex': u(-15, 25), 'hip_abd': u(10, 45), 'hip_rot': u(0, 40),
             'knee': u(0, 100), 'ankle': u(-30, 20)}
      arm = {'sh_flex': u(-20, 60), 'sh_abd': u(40, 120), 'sh_rot': u(-80, 0),
             'elbow': u(30, 130)}
    else:
      leg = {'hip_flex': u(15, 115), 'hip_abd': u(10, 55), 'hip_rot': u(-10, 45),
             'knee': u(15, 125), 'ankle': u(-25, 25)}
      arm = {'sh_flex': u(-20, 100), 'sh_abd': u(10, 110), 'sh_rot': u(-70, 50),
             'elbow': u(15, 135)}
    arm.update(pron=u(-20, 120), wrist=u(-30, 60), wrist_dev=u(-15, 15), curl=u(0.4, 1.),
               thumb=u(0.3, 1.))
    leg.update(toe_out=u(0, 30))
    pose.update({f'{s}_{k}': float(v) for k, v in {**arm, **leg}.items()})
  pose.update(lean=u(-10, 15), bend=u(-15, 15), twist=u(-15, 15))
  _face_pose(rng, pose, yaw=70., pitch=(-40., 0.) if kind == 'prone' else (-20., 20.))
  return pose, kind


def _wheelchair_pose(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """Seated with hips and knees near 90°; arms are placed later (on the rims or free)."""
  pose = _neutral_pose()
  u = rng.uniform
  for s in 'lr':
    leg = {'hip_flex': u(78, 100), 'hip_abd': u(0, 15), 'hip_rot': u(-5, 15),
           'knee': u(75, 105), 'ankle': u(-15, 10), 'toe_out': u(0, 15)}
    style = ('down', 'front', 'raised', 'side', 'wave')[rng.choice(5, p=[0.3, 0.4, 0.1, 0.1, 0.1])]
    arm = _arm(rng, style)
    pose.update({f'{s}_{k}': float(v) for k, v in {**arm, **leg}.items()})
  pose.update(lean=u(-3, 20), bend=u(-6, 6), twist=u(-10, 10))
  _face_pose(rng, pose)
  return pose, 'seated'


# ---------------------------------------------------------------------------------------------
# The head: an egg (a tapered capsule of elliptic section, so cheeks run smoothly into the chin),
# an ellipsoid nose and ears, and 68 face landmarks, in head units (x the person's left, y up,
# z forward; one unit = head half-width; origin on the eye line inside the head).

_CROWN = ((0., 0.3, -0.08), 1.)
_HEAD_DEPTH = 1.12        # front-to-back over side-to-side extent
_CHIN_Y = -1.46
_NOSE = ((0., -0.3, 0.86), (0.13, 0.28, 0.25))
_EAR = ((-0.12, -0.1), (0.13, 0.33, 0.22))   # (height, depth) of the centre; radii

_BROW = ((-0.8, 0.2), (-0.63, 0.29), (-0.46, 0.32), (-0.3, 0.31), (-0.15, 0.26))
_EYE = ((-0.64, 0.), (-0.52, 0.085), (-0.34, 0.085), (-0.22, 0.), (-0.34, -0.065),
        (-0.52, -0.065))
_NOSE_RIDGE = ((0., 0.06), (0., -0.1), (0., -0.25), (0., -0.4))
_NOSTRILS = ((-0.22, -0.5), (-0.11, -0.54), (0., -0.56), (0.11, -0.54), (0.22, -0.5))
_LIPS_OUTER = ((-0.42, -0.86), (-0.27, -0.79), (-0.12, -0.75), (0., -0.77), (0.12, -0.75),
               (0.27, -0.79), (0.42, -0.86), (0.28, -0.97), (0.13, -1.01), (0., -1.02),
               (-0.13, -1.01), (-0.28, -0.97))
_LIPS_INNER = ((-0.35, -0.86), (-0.12, -0.83), (0., -0.84), (0.12, -0.83), (0.35, -0.86),
               (0.12, -0.87), (0., -0.88), (-0.12, -0.87))


@dataclasses.dataclass(frozen=True)
class _Head:
  """Head geometry in head units: the egg from the chin sphere (a, ra) to the crown (b, rb)."""

  a: np.ndarray
  ra: float
  b: np.ndarray
  rb: float
  nose: tuple[np.ndarray, np.ndarray]
  ears: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # left, right

  def exit(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Where rays (n, 3) from inside the head leave the egg or, farther out, the nose."""
    squash = np.array([1., 1., 1. / _HEAD_DEPTH])
    a, b = self.a * squash, self.b * squash
    axis = b - a
    lo, hi = np.zeros(len(origins)), np.full(len(origins), 4.)
    # The egg is convex, so bisection finds its single crossing along each ray.
    for _ in range(30):
      mid = (lo + hi) / 2
      p = (origins + mid[:, None] * directions) * squash
      t = np.clip((p - a) @ axis / (axis @ axis), 0., 1.)
      inside = (np.linalg.norm(p - (a + t[:, None] * axis), axis=1)
                <= self.ra + (self.rb - self.ra) * t)
      lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    centre, radii = self.nose
    o = (origins - centre) / radii
    d = directions / radii
    qa, qb, qc = np.sum(d * d, axis=1), 2 * np.sum(o * d, axis=1), np.sum(o * o, axis=1) - 1
    disc = qb * qb - 4 * qa * qc
    nose = np.where(disc >= 0, (-qb + np.sqrt(np.clip(disc, 0., None))) / (2 * qa), 0.)
    return origins + np.maximum(lo, nose)[:, None] * directions


def _head(build: _Build) -> _Head:
  a = np.array([0., _CHIN_Y + build.chin, 0.1])
  b, rb = np.array(_CROWN[0]), _CROWN[1]
  nose = (np.array(_NOSE[0]) * [1, build.face_scale, 1] - [0., build.face_shift, 0.],
          np.array(_NOSE[1]) * build.face_scale)
  # Ears sit on the egg's side at their height.
  y, z = _EAR[0]
  t = np.clip((y - a[1]) / (b[1] - a[1]), 0., 1.)
  x = 0.97 * (build.chin + (rb - build.chin) * t)
  ears = tuple((np.array([sign * x, y, z]), np.array(_EAR[1])) for _, sign in _SIDES)
  return _Head(a, build.chin, b, rb, nose, ears)


def _face_landmarks(head: _Head, build: _Build, pose: dict[str, float],
                    rng: np.random.Generator) -> np.ndarray:
  """The 68 iBUG landmarks (68, 3) in head units, on the head's surface."""
  k, shift = build.face_scale, build.face_shift
  flat = lambda pts: [(x * k, y * k - shift) for x, y in pts]
  brow_up = 0.06 * pose['brow']
  right_brow = [(x, y + brow_up) for x, y in _BROW]
  left_brow = [(-x, y) for x, y in reversed(right_brow)]
  right_eye = list(_EYE)
  left_eye = [(-x, y) for x, y in (_EYE[3], _EYE[2], _EYE[1], _EYE[0], _EYE[5], _EYE[4])]
  open_ = 0.14 * pose['mouth']
  smile = 0.06 * pose['smile']
  outer = [(x, y + (smile if abs(x) > 0.4 else 0.) - (open_ if i in range(7, 12) else 0.))
           for i, (x, y) in enumerate(_LIPS_OUTER)]
  inner = [(x, y + (smile * 0.7 if abs(x) > 0.3 else 0.) - (open_ if i >= 5 else 0.))
           for i, (x, y) in enumerate(_LIPS_INNER)]
  front = (flat(right_brow) + flat(left_brow) + flat(_NOSE_RIDGE) + flat(_NOSTRILS)
           + flat(right_eye) + flat(left_eye) + flat(outer) + flat(inner))
  # The jaw contour from the right ear round the chin to the left ear: rays from inside the
  # lower head fanning down and a little forward, so the points sit just inside the outline.
  theta = np.pi * np.arange(17) / 16
  jaw_origins = np.stack([np.zeros(17), (-0.3 - 0.3 * np.sin(theta)) * k - shift, np.zeros(17)],
                         axis=1)
  jaw_dirs = np.stack([-np.cos(theta), -1.3 * np.sin(theta) + 0.1, np.full(17, 0.3)], axis=1)
  front_origins = np.array([(x, y, 0.) for x, y in front])
  front_dirs = np.tile([0., 0., 1.], (len(front), 1))
  points = head.exit(np.concatenate([jaw_origins, front_origins]),
                     np.concatenate([jaw_dirs / np.linalg.norm(jaw_dirs, axis=1, keepdims=True),
                                     front_dirs]))
  points[:, :2] += rng.normal(0., 0.012, (68, 2))
  return points


# ---------------------------------------------------------------------------------------------
# Forward kinematics.


@dataclasses.dataclass
class _Skeleton:
  """Joint positions and part frames (3×3, columns = part's left, up, forward) in body units."""

  joints: dict[str, np.ndarray]
  frames: dict[str, np.ndarray]


def _forward(build: _Build, pose: dict[str, float]) -> _Skeleton:
  j: dict[str, np.ndarray] = {'pelvis': np.zeros(3)}
  f: dict[str, np.ndarray] = {}
  pos = j['pelvis']
  for k, name in enumerate(('spine', 'spine1', 'spine2', 'neck'), start=1):
    # The spine bends gradually: each vertebral segment takes a quarter of the torso's angles.
    rot = _rx(pose['lean'] * k / 4) @ _rz(pose['bend'] * k / 4) @ _ry(pose['twist'] * k / 4)
    pos = pos + rot @ [0., build.trunk / 4, 0.]
    j[name] = pos
  torso = rot
  f['torso'] = torso
  j['atlas'] = j['neck'] + torso @ [0., build.neck, 0.]
  head = torso @ _ry(pose['head_yaw']) @ _rx(pose['head_pitch']) @ _rz(pose['head_roll'])
  f['head'] = head
  j['head_origin'] = j['atlas'] + head @ (np.array([0., 0.85, 0.25]) * build.head)
  for side, sign in _SIDES:
    g = {k: pose[f'{side[0]}_{k}'] for k in _SIDE_ANGLES}
    shoulder = j['neck'] + torso @ [sign * build.shoulder, -build.shoulder_drop, 0.]
    j[f'{side}_collar'] = j['neck'] + torso @ [sign * 0.35 * build.shoulder, -0.02, 0.01]
    upper = torso @ _rx(-g['sh_flex']) @ _rz(sign * g['sh_abd']) @ _ry(-sign * g['sh_rot'])
    elbow = shoulder + upper @ (_DOWN * build.upper_arm)
    fore = upper @ _rx(-g['elbow'])
    j[f'{side}_shoulder'], j[f'{side}_elbow'] = shoulder, elbow
    j[f'{side}_wrist'] = elbow + fore @ (_DOWN * build.forearm)
    f[f'{side}_hand'] = (fore @ _ry(-sign * g['pron']) @ _rz(-sign * g['wrist'])
                         @ _rx(-g['wrist_dev']))
    hip = np.array([sign * build.hip, -build.hip_drop, 0.])
    thigh = _rx(-g['hip_flex']) @ _rz(sign * g['hip_abd']) @ _ry(sign * g['hip_rot'])
    knee = hip + thigh @ (_DOWN * build.thigh)
    shank = thigh @ _rx(g['knee'])
    j[f'{side}_hip'], j[f'{side}_knee'] = hip, knee
    j[f'{side}_ankle'] = knee + shank @ (_DOWN * build.shank)
    f[f'{side}_foot'] = shank @ _ry(sign * g['toe_out']) @ _rx(g['ankle'])
  return _Skeleton(j, f)


def _reach(skel: _Skeleton, build: _Build, side: str, sign: float, target, pole, palm):
  """Two-bone IK: puts the wrist at ``target`` (or as near as the arm reaches), the elbow toward
  ``pole`` and the palm facing ``palm``."""
  shoulder = skel.joints[f'{side}_shoulder']
  l1, l2 = build.upper_arm, build.forearm
  offset = np.asarray(target) - shoulder
  dist = float(np.clip(np.linalg.norm(offset), abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3))
  axis = _unit(offset)
  along = (l1 * l1 - l2 * l2 + dist * dist) / (2 * dist)
  bend = _unit(np.asarray(pole) - (np.asarray(pole) @ axis) * axis)
  elbow = shoulder + along * axis + np.sqrt(max(l1 * l1 - along * along, 0.)) * bend
  wrist = shoulder + dist * axis
  skel.joints[f'{side}_elbow'], skel.joints[f'{side}_wrist'] = elbow, wrist
  down = _unit(wrist - elbow)
  normal = _unit(np.asarray(palm) - (np.asarray(palm) @ down) * down)
  # Hand frame columns (left, up, forward) with up = -along the hand and left = -sign·palm.
  col_x = -sign * normal
  col_y = -down
  skel.frames[f'{side}_hand'] = np.stack([col_x, col_y, np.cross(col_x, col_y)], axis=1)


# ---------------------------------------------------------------------------------------------
# The drawable figure.


@dataclasses.dataclass
class _Prim:
  """One primitive in body units. ``group``: 'body' and 'gear' belong to the instance (its mask),
  'prop' does not. ``section``: for an elliptic torso, (left axis, forward axis · depth ratio)."""

  kind: str                      # 'tube', 'ellipsoid' or 'polygon'
  points: np.ndarray             # (n, 3) tube points, (1, 3) centre or (n, 3) vertices
  material: Material
  group: str = 'body'
  radii: tuple[float, ...] = (0.,)
  axes: np.ndarray | None = None
  hole: np.ndarray | None = None
  section: tuple[np.ndarray, np.ndarray] | None = None
  closed: bool = False
  decal: float | None = None     # decal depth tolerance, in body units
  min_scale: float = 0.          # skipped below this many pixels per body unit (tiny details)


class _Figure:
  """A person's primitives and labelled points (body units, body frame)."""

  def __init__(self):
    self.prims: list[_Prim] = []
    self.points: dict[str, np.ndarray] = {}
    self.slack: dict[str, float] = {}

  def label(self, name: str, point, slack: float):
    self.points[name] = np.asarray(point, np.float64)
    self.slack[name] = float(slack)

  def capsule(self, p0, p1, r0, r1, material, group='body', section=None):
    self.tube([p0, p1], [r0, r1], material, group, section=section)

  def tube(self, points, radii, material, group='body', section=None, closed=False):
    self.prims.append(_Prim('tube', np.asarray(points, np.float64), material, group,
                            tuple(float(r) for r in radii), section=section, closed=closed))

  def ellipsoid(self, centre, axes, material, group='body'):
    self.prims.append(_Prim('ellipsoid', np.array([centre], np.float64), material, group,
                            axes=np.asarray(axes, np.float64)))

  def polygon(self, verts, material, group='body', hole=None):
    self.prims.append(_Prim('polygon', np.asarray(verts, np.float64), material, group,
                            hole=None if hole is None else np.asarray(hole, np.float64)))

  def decal_line(self, points, radius, material, tol, min_scale):
    points = np.asarray(points, np.float64)
    self.prims.append(_Prim('tube', points, material, 'body', (radius,) * len(points),
                            decal=tol, min_scale=min_scale))

  def decal_polygon(self, points, material, tol, min_scale):
    self.prims.append(_Prim('polygon', np.asarray(points, np.float64), material, 'body',
                            decal=tol, min_scale=min_scale))


@dataclasses.dataclass(frozen=True)
class _Outfit:
  skin: Material
  hair: tuple[float, float, float]
  hair_cap: float | None        # hairline threshold; None for bald
  long_hair: bool
  shirt: Material
  sleeve: str                   # 'long', 'short' or 'none'
  pants: Material
  legs: str                     # 'long' or 'short'
  shoes: Material
  lips: tuple[float, float, float]
  iris: tuple[float, float, float]
  waist: float                  # shirt/trouser line, fraction of the torso capsule


_SKIN_TONES = ((0.98, 0.84, 0.72), (0.95, 0.77, 0.63), (0.88, 0.67, 0.52), (0.78, 0.57, 0.42),
               (0.62, 0.43, 0.3), (0.46, 0.31, 0.21), (0.34, 0.23, 0.16))
_HAIR_COLORS = ((0.07, 0.05, 0.04), (0.2, 0.12, 0.07), (0.38, 0.25, 0.13), (0.7, 0.55, 0.32),
                (0.5, 0.22, 0.1), (0.62, 0.6, 0.58))
_IRIS_COLORS = ((0.25, 0.15, 0.08), (0.12, 0.08, 0.05), (0.25, 0.4, 0.6), (0.3, 0.45, 0.3))


def _pick(rng, options):
  return options[rng.integers(len(options))]


def _jitter(rng, color, amount=0.06):
  return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0., 1.)) for c in color)


def _outfit(rng: np.random.Generator, infant: bool) -> _Outfit:
  skin = _jitter(rng, _pick(rng, _SKIN_TONES), 0.04)
  pattern_scale = 0.04
  if infant:
    pastel = lambda: render.random_color(rng, saturation=(0.05, 0.5), value=(0.6, 1.))
    onesie = render.random_material(rng, pastel(), pattern_scale, patterns=(
        'plain', 'plain', 'stripes', 'dots', 'checks'))
    dressed = rng.random() < 0.75
    diaper = Material(_jitter(rng, (0.95, 0.95, 0.93), 0.03))
    return _Outfit(
        skin=Material(skin), hair=_pick(rng, _HAIR_COLORS[:5]),
        hair_cap=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.6 else None, long_hair=False,
        shirt=onesie if dressed else Material(skin),
        sleeve=_pick(rng, ('long', 'short', 'none')) if dressed else 'none',
        pants=onesie if dressed else diaper, legs=_pick(rng, ('long', 'short')) if dressed
        else 'short', shoes=Material(skin) if rng.random() < 0.6 else Material(pastel()),
        lips=tuple(c * f for c, f in zip(skin, (0.92, 0.62, 0.6))), iris=_pick(rng, _IRIS_COLORS),
        waist=float(rng.uniform(0.2, 0.35)),
    )
  trousers = _pick(rng, ((0.15, 0.2, 0.35), (0.1, 0.1, 0.1), (0.55, 0.48, 0.35),
                         (0.3, 0.3, 0.32), render.random_color(rng)))
  return _Outfit(
      skin=Material(skin), hair=_pick(rng, _HAIR_COLORS),
      hair_cap=float(rng.uniform(-0.25, 0.1)) if rng.random() < 0.92 else None,
      long_hair=rng.random() < 0.3,
      shirt=render.random_material(rng, render.random_color(rng), pattern_scale),
      sleeve=_pick(rng, ('long', 'long', 'short', 'none')),
      pants=render.random_material(rng, _jitter(rng, trousers), pattern_scale,
                                   patterns=('plain', 'plain', 'noise', 'checks', 'stripes')),
      legs=_pick(rng, ('long', 'long', 'long', 'short')),
      shoes=Material(render.random_color(rng, value=(0.05, 0.5)), gloss=0.15),
      lips=tuple(c * f for c, f in zip(skin, (0.85, 0.55, 0.55))), iris=_pick(rng, _IRIS_COLORS),
      waist=float(rng.uniform(0.3, 0.45)),
  )


def _banded(start: Material, length: float, rest: Material) -> Material:
  """``start`` for the first ``length`` body units along a capsule, then ``rest``."""
  return dataclasses.replace(rest, start=start, start_length=length)


def _dress(rng: np.random.Generator, fig: _Figure, skel: _Skeleton, build: _Build,
           pose: dict[str, float], outfit: _Outfit):
  """Adds the body's primitives and keypoints to ``fig``."""
  j, fr = skel.joints, skel.frames
  torso = fr['torso']
  skin = outfit.skin
  depth = build.depth_ratio
  # Torso: one elliptic capsule from the pelvis to the chest, trousers up to the waist.
  bottom = j['pelvis'] + [0., -0.01, 0.]
  length = float(np.linalg.norm(j['spine2'] - bottom))
  fig.capsule(bottom, j['spine2'], build.pelvis_width, build.chest_width,
              _banded(outfit.pants, outfit.waist * length, outfit.shirt),
              section=(torso[:, 0], torso[:, 2] * depth))
  # The shoulder bar ends half its radius inside the joints, so its caps do not bulge past the
  # upper arms.
  inward = 0.25 * (j['right_shoulder'] - j['left_shoulder']) * build.r_shoulder / build.shoulder
  fig.capsule(j['left_shoulder'] + inward, j['right_shoulder'] - inward, build.r_shoulder,
              build.r_shoulder, outfit.shirt)
  fig.capsule(j['left_hip'], j['right_hip'], build.r_thigh[0] * 0.95, build.r_thigh[0] * 0.95,
              outfit.pants)
  fig.capsule(j['neck'] - torso[:, 1] * 0.02, j['atlas'], build.r_neck, build.r_neck * 0.95, skin)
  torso_depth = _JOINT_SLACK * max(build.chest_width, build.pelvis_width) * depth
  for name in ('pelvis', 'spine', 'spine1', 'spine2'):
    fig.label(name, j[name], torso_depth)
  fig.label('neck', j['neck'], torso_depth)
  for side, _ in _SIDES:
    fig.label(f'{side}_collar', j[f'{side}_collar'], torso_depth)
    # A joint's slack is the thickest part meeting there, so its own limb does not hide it. The
    # trunk's joints get the trunk's half-width: a far shoulder or hip still shows at the body's
    # side in a three-quarter view and is hidden only from about 50 degrees on.
    fig.label(f'{side}_shoulder', j[f'{side}_shoulder'], _JOINT_SLACK * build.chest_width)
    fig.label(f'{side}_hip', j[f'{side}_hip'],
              _JOINT_SLACK * max(build.pelvis_width, build.r_thigh[0]))
  _dress_head(rng, fig, skel, build, pose, outfit)
  for side, sign in _SIDES:
    _dress_arm(fig, skel, build, pose, outfit, side, sign)
    _dress_leg(fig, skel, build, outfit, side, sign)


def _dress_head(rng, fig: _Figure, skel: _Skeleton, build: _Build, pose, outfit: _Outfit):
  frame, origin, unit = skel.frames['head'], skel.joints['head_origin'], build.head
  to_body = lambda p: origin + frame @ (np.asarray(p) * unit)
  head = _head(build)
  skin = outfit.skin
  ellipsoid = lambda centre, radii, material: fig.ellipsoid(
      to_body(centre), frame @ np.diag(np.asarray(radii) * unit), material)
  egg = skin
  if outfit.hair_cap is not None:
    egg = dataclasses.replace(skin, cap=(tuple(frame @ _unit([0., 0.8, -0.6])), outfit.hair_cap,
                                         outfit.hair))
  fig.capsule(to_body(head.a), to_body(head.b), head.ra * unit, head.rb * unit, egg,
              section=(frame[:, 0], frame[:, 2] * _HEAD_DEPTH))
  ellipsoid(*head.nose, skin)
  for centre, radii in head.ears:
    ellipsoid(centre, radii, skin)
  if outfit.long_hair and outfit.hair_cap is not None:
    ellipsoid((0., -0.55, -0.62), (1.05, 1.2, 0.62), Material(outfit.hair))
  fig.label('head', to_body((head.a + head.b) / 2), _HEAD_DEPTH * head.rb * unit)
  for (side, sign), (centre, radii) in zip(_SIDES, head.ears):
    fig.label(f'{side}_ear', to_body(centre + [sign * radii[0] * 0.6, 0., 0.]),
              _JOINT_SLACK * radii.max() * unit)
  face = _face_landmarks(head, build, pose, rng)
  body_face = np.array([to_body(p) for p in face])
  for i, p in enumerate(body_face):
    fig.label(f'face-{i}', p, 0.1 * unit)
  fig.label('nose', body_face[30], 0.1 * unit)
  for (side, _), eye in zip(_SIDES, (slice(42, 48), slice(36, 42))):
    centre = face[eye].mean(axis=0)
    fig.label(f'{side}_eye', to_body(head.exit(np.array([[centre[0], centre[1], 0.]]),
                                               np.array([[0., 0., 1.]]))[0]), 0.1 * unit)
  # Face features are decals over the head's surface: they disappear behind the head when it
  # turns away and behind anything in front of the face.
  tol = 0.3 * unit
  # Features finer than the pixels are skipped: a face under 3 px half-width shows no decals.
  detail = 3. / unit
  darker = lambda color, k: Material(tuple(float(c) * k for c in color))
  # The jaw line is a faint shadow: a dark line would read as a strap or a beard.
  fig.decal_line(body_face[0:17], 0.025 * unit, darker(skin.color, 0.86), tol, detail)
  brow_color = np.asarray(outfit.hair)
  if build.infant:
    brow_color = 0.7 * np.asarray(skin.color) + 0.3 * brow_color
  brow = darker(brow_color, 0.85)
  fig.decal_line(body_face[17:22], 0.05 * unit, brow, tol, detail)
  fig.decal_line(body_face[22:27], 0.05 * unit, brow, tol, detail)
  fig.decal_line(body_face[31:36], 0.03 * unit, darker(skin.color, 0.62), tol, detail)
  sclera = Material((0.93, 0.91, 0.88))
  dark = Material((0.06, 0.04, 0.04))
  for eye in (slice(36, 42), slice(42, 48)):
    pts = body_face[eye]
    fig.decal_polygon(pts, sclera, tol, detail)
    centre = pts.mean(axis=0)
    # Irises stay down to tiny faces, where they are the dark dots a photo would show.
    fig.decal_line([centre, centre], 0.075 * unit, Material(outfit.iris), tol, detail / 2)
    fig.decal_line([centre, centre], 0.035 * unit, dark, tol, detail)
    fig.decal_line(pts[[0, 1, 2, 3]], 0.025 * unit, dark, tol, detail)
  fig.decal_polygon(body_face[48:60], Material(outfit.lips), tol, detail)
  if pose['mouth'] > 0.15:
    fig.decal_polygon(body_face[60:68], Material((0.25, 0.08, 0.08)), tol, detail)
  else:
    fig.decal_line(body_face[60:65], 0.02 * unit, darker(outfit.lips, 0.5), tol, detail)


# Hand template: finger bases (along, across) in hand lengths, phalanx lengths, spread (degrees)
# and radius; 'across' points toward the thumb.
_FINGERS = (
    ('forefinger', (0.45, 0.14), (0.21, 0.13, 0.1), 8., 0.047),
    ('middle_finger', (0.47, 0.045), (0.24, 0.15, 0.11), 0., 0.05),
    ('ring_finger', (0.45, -0.05), (0.22, 0.14, 0.1), -7., 0.046),
    ('pinky_finger', (0.41, -0.135), (0.17, 0.1, 0.09), -15., 0.04),
)


def _dress_arm(fig: _Figure, skel: _Skeleton, build: _Build, pose, outfit: _Outfit, side: str,
               sign: float):
  j = skel.joints
  s = side[0]
  shoulder, elbow, wrist = j[f'{side}_shoulder'], j[f'{side}_elbow'], j[f'{side}_wrist']
  upper_len = float(np.linalg.norm(elbow - shoulder))
  upper = {'long': outfit.shirt, 'short': _banded(outfit.shirt, 0.55 * upper_len, outfit.skin),
           'none': outfit.skin}[outfit.sleeve]
  fig.capsule(shoulder, elbow, *build.r_upper_arm, upper)
  fig.capsule(elbow, wrist, *build.r_forearm, outfit.shirt if outfit.sleeve == 'long'
              else outfit.skin)
  fig.label(f'{side}_elbow', elbow, _JOINT_SLACK * max(build.r_upper_arm[1], build.r_forearm[0]))
  fig.label(f'{side}_wrist', wrist, _JOINT_SLACK * build.r_forearm[1])
  frame = skel.frames[f'{side}_hand']
  along, across, palm = -frame[:, 1], frame[:, 2], -sign * frame[:, 0]
  size = build.hand
  to_body = lambda a, b, n=0.: wrist + size * (a * along + b * across + n * palm)
  fig.ellipsoid(to_body(0.23, 0.0, 0.01),
                np.stack([along * 0.25, across * 0.21, palm * 0.07], axis=1) * size,
                outfit.skin)
  curl, thumb_curl = pose[f'{s}_curl'], pose[f'{s}_thumb']
  fig.label(f'{side}_hand_root', wrist, _JOINT_SLACK * build.r_forearm[1])
  # Thumb: from the carpometacarpal joint, swinging across the palm as it curls.
  base = to_body(0.12, 0.12, 0.03)
  direction = _unit(0.62 * along + 0.7 * across + 0.35 * palm)
  points = [base]
  for k, length in enumerate((0.17, 0.13, 0.11)):
    bend = np.radians(thumb_curl * (25., 40., 45.)[k])
    direction = _unit(np.cos(bend) * direction + np.sin(bend) * _unit(palm - 0.6 * across))
    points.append(points[-1] + size * length * direction)
  fig.tube(points, np.array([0.07, 0.06, 0.055, 0.048]) * size, outfit.skin)
  for k, p in enumerate(points, start=1):
    fig.label(f'{side}_thumb{k}', p, 0.08 * size)
  for name, (a, b), phalanges, spread, radius in _FINGERS:
    spread_dir = _unit(along + np.tan(np.radians(spread * (1.2 - 0.6 * curl))) * across)
    points = [to_body(a, b)]
    angle = 0.
    for k, length in enumerate(phalanges):
      angle += np.radians(curl * (75., 95., 65.)[k] + 5.)
      direction = np.cos(angle) * spread_dir + np.sin(angle) * palm
      points.append(points[-1] + size * length * direction)
    fig.tube(points, radius * size * np.array([1., 0.92, 0.85, 0.78]), outfit.skin)
    for k, p in enumerate(points, start=1):
      fig.label(f'{side}_{name}{k}', p, 1.5 * radius * size)
    if name == 'middle_finger':
      fig.label(f'{side}_hand_tip', points[1], 1.5 * radius * size)


def _dress_leg(fig: _Figure, skel: _Skeleton, build: _Build, outfit: _Outfit, side: str,
               sign: float):
  j = skel.joints
  hip, knee, ankle = j[f'{side}_hip'], j[f'{side}_knee'], j[f'{side}_ankle']
  fig.capsule(hip, knee, *build.r_thigh, outfit.pants)
  shank_len = float(np.linalg.norm(ankle - knee))
  lower = outfit.pants if outfit.legs == 'long' else _banded(
      outfit.pants, 0.12 * shank_len, outfit.skin)
  fig.capsule(knee, ankle, *build.r_shank, lower)
  fig.label(f'{side}_knee', knee, _JOINT_SLACK * max(build.r_thigh[1], build.r_shank[0]))
  # The heel juts out behind the ankle: seen from behind it must not hide the ankle.
  fig.label(f'{side}_ankle', ankle, _JOINT_SLACK * (build.r_foot + 0.15 * build.foot))
  frame = skel.frames[f'{side}_foot']
  forward, up, lateral = frame[:, 2], frame[:, 1], sign * frame[:, 0]
  foot, r = build.foot, build.r_foot
  at = lambda f, u, l=0.: ankle + foot * (f * forward + u * up + l * lateral)
  heel = at(-0.17, -0.18)
  toe = at(0.6, -0.2)
  fig.capsule(ankle - up * build.ankle * 0.3, at(0.05, -0.17), build.r_shank[1] * 1.1, r,
              outfit.shoes)
  fig.capsule(heel, toe, r, r * 1.12, outfit.shoes)
  # Foot points sit inside the shoe's end caps, up to the cap's radius from its surface.
  fig.label(f'{side}_heel', at(-0.22, -0.24), 1.3 * r)
  fig.label(f'{side}_big_toe', at(0.7, -0.22, -0.1), 1.3 * r)
  fig.label(f'{side}_small_toe', at(0.55, -0.23, 0.13), 1.3 * r)
  fig.label(f'{side}_toe', at(0.62, -0.21), 1.3 * r)


# ---------------------------------------------------------------------------------------------
# Chairs.


def _stool(rng: np.random.Generator, fig: _Figure, skel: _Skeleton, build: _Build):
  """A seat block under a sitting adult (a prop: not part of the instance)."""
  j = skel.joints
  seat_y = min(j['left_hip'][1], j['right_hip'][1]) - build.r_thigh[0] * 0.9
  floor = min(j['left_ankle'][1], j['right_ankle'][1]) - build.ankle
  front = min(j['left_knee'][2], j['right_knee'][2]) - 0.03
  half = build.pelvis_width + 0.05
  material = render.random_material(rng, render.random_color(rng, value=(0.2, 0.8)), 0.05,
                                    patterns=('plain', 'plain', 'noise'))
  top = [[-half, seat_y, -0.12], [half, seat_y, -0.12], [half, seat_y, front],
         [-half, seat_y, front]]
  fig.polygon(top, material, 'prop')
  fig.polygon([[-half, seat_y, front], [half, seat_y, front], [half, seat_y - 0.04, front],
               [-half, seat_y - 0.04, front]], material, 'prop')
  for x in (-half + 0.015, half - 0.015):
    for z in (-0.1, front - 0.015):
      fig.capsule([x, seat_y - 0.04, z], [x, floor, z], 0.012, 0.012, material, 'prop')
  if rng.random() < 0.6:
    fig.polygon([[-half, seat_y, -0.13], [half, seat_y, -0.13], [half, seat_y + 0.3, -0.16],
                 [-half, seat_y + 0.3, -0.16]], material, 'prop')


def _wheelchair(rng: np.random.Generator, fig: _Figure, skel: _Skeleton, build: _Build,
                pose: dict[str, float]):
  """A manual wheelchair fitted to a seated skeleton; moves the hands onto the push rims when
  the pose says so. Its primitives are 'gear': part of the instance's silhouette and box."""
  j = skel.joints
  frame = Material(render.random_color(rng, saturation=(0., 0.8), value=(0.1, 0.8)), gloss=0.5)
  tyre = Material(_jitter(rng, (0.1, 0.1, 0.11), 0.04), gloss=0.1)
  metal = Material((0.72, 0.73, 0.75), gloss=0.7)
  fabric = Material(_jitter(rng, (0.12, 0.12, 0.14), 0.08))
  radius = rng.uniform(0.165, 0.19)
  tyre_r = 0.013
  sole = min(j['left_ankle'][1], j['right_ankle'][1]) - build.ankle
  ground = sole - 0.045
  hub_z = -0.05 + rng.uniform(-0.02, 0.02)
  hub_x = build.hip + build.r_thigh[0] + 0.06
  camber = np.radians(rng.uniform(0, 7))
  seat_y = max(j['left_hip'][1], j['right_hip'][1]) - build.r_thigh[0] * 0.9
  half = hub_x - 0.035
  front_z = max(j['left_knee'][2], j['right_knee'][2]) - 0.04
  for side, sign in _SIDES:
    hub = np.array([sign * hub_x, ground + radius, hub_z])
    up = np.array([-sign * np.sin(camber), np.cos(camber), 0.])
    fwd = np.array([0., 0., 1.])
    fig.tube(render.circle_points(hub, fwd * (radius - tyre_r), up * (radius - tyre_r), 28),
             [tyre_r] * 28, tyre, 'gear', closed=True)
    rim = [render.circle_points(hub, fwd * r, up * r, 36)
           for r in (radius - 2 * tyre_r, radius - 2.8 * tyre_r)]
    fig.polygon(rim[0], metal, 'gear', hole=rim[1])
    # All spokes as one tube running rim → hub → rim: one primitive instead of twelve.
    spokes = render.circle_points(hub, fwd * (radius - 2.4 * tyre_r), up * (radius - 2.4 * tyre_r),
                                  12)
    chain = np.stack([spokes, np.broadcast_to(hub, spokes.shape)], axis=1).reshape(-1, 3)
    fig.tube(chain, [0.0025] * len(chain), metal, 'gear')
    push = render.circle_points(hub + [sign * 0.025, 0., 0.], fwd * radius * 0.82,
                                up * radius * 0.82, 20)
    fig.tube(push, [0.005] * len(push), metal, 'gear', closed=True)
    fig.ellipsoid(hub, np.diag([0.03, 0.022, 0.022]), frame, 'gear')
    fig.capsule(hub, [sign * half, hub[1], hub_z], 0.01, 0.01, frame, 'gear')
    fig.label(f'{side}_rear_wheel_hub', hub, 0.03)
    fig.label(f'{side}_wheel_ground_contact', hub - up * (radius - 0.4 * tyre_r), tyre_r)
    # Frame: seat rail, backrest post with handle, front post down to the footrest, caster.
    ankle = j[f'{side}_ankle']
    rest = np.array([ankle[0], sole - 0.012, ankle[2] + 0.06])
    back = [sign * half, seat_y, -0.1]
    fig.capsule(back, [sign * half, seat_y, front_z], 0.011, 0.011, frame, 'gear')
    top = [sign * half, seat_y + 0.28, -0.13]
    fig.capsule([sign * half, hub[1], -0.1], top, 0.011, 0.011, frame, 'gear')
    fig.capsule(top, [sign * half, seat_y + 0.3, -0.2], 0.013, 0.013, fabric, 'gear')
    fig.capsule([sign * half, seat_y, front_z], [rest[0] * 0.7 + sign * half * 0.3,
                                                 rest[1] + 0.02, rest[2] - 0.03],
                0.011, 0.011, frame, 'gear')
    fig.capsule([sign * half, hub[1], -0.1], [sign * half, ground + 0.07, front_z + 0.02],
                0.009, 0.009, frame, 'gear')
    caster = np.array([sign * half, ground + 0.035, front_z + 0.05])
    fig.capsule([sign * half, ground + 0.07, front_z + 0.02], caster, 0.007, 0.007, frame, 'gear')
    fig.ellipsoid(caster, np.diag([0.01, 0.035, 0.035]), tyre, 'gear')
    fig.ellipsoid(rest, np.diag([0.045, 0.011, 0.075]), frame, 'gear')
    # On the plate's front part, which the toes leave uncovered.
    fig.label(f'{side}_footrest', rest + [0., 0., 0.055], 0.011)
  fig.polygon([[-half, seat_y, -0.1], [half, seat_y, -0.1], [half, seat_y, front_z],
               [-half, seat_y, front_z]], fabric, 'gear')
  fig.polygon([[-half, seat_y + 0.02, -0.105], [half, seat_y + 0.02, -0.105],
               [half, seat_y + 0.27, -0.13], [-half, seat_y + 0.27, -0.13]], fabric, 'gear')
  for side, sign in _SIDES:
    if rng.random() < 0.6:
      hub = np.array([sign * hub_x, ground + radius, hub_z])
      angle = np.radians(rng.uniform(45, 120))
      target = hub + [sign * 0.03, radius * 0.82 * np.sin(angle), radius * 0.82 * np.cos(angle)]
      _reach(skel, build, side, sign, target, pole=[sign * 0.5, 0., -1.],
             palm=[sign * 0.6, -1., 0.])
      pose[f'{side[0]}_curl'] = rng.uniform(0.5, 0.9)


# ---------------------------------------------------------------------------------------------
# Scenes.


@dataclasses.dataclass
class Instance:
  """One annotated person in a rendered scene.

  Attributes:
    keypoints: (K, 3) float (x, y, v) in the schema's order; v = 0 rows are (0, 0, 0).
    mask: (H, W) bool, the instance's visible silhouette (for wheelchair users, with the chair).
  """

  keypoints: np.ndarray
  mask: np.ndarray


@dataclasses.dataclass
class Scene:
  """One rendered image: ``image`` (H, W, 3) uint8 as written; ``clean`` and ``background``
  (H, W, 3) float in [0, 1], the rendering before camera finishing and the backdrop alone."""

  image: np.ndarray
  clean: np.ndarray
  background: np.ndarray
  instances: list[Instance]


def _person(rng: np.random.Generator, population: str) -> tuple[_Figure, np.ndarray]:
  """A dressed figure of ``population`` and the camera-from-body rotation it is seen with."""
  infant = population == 'infant'
  build = _vary(rng, _INFANT if infant else _ADULT)
  if infant:
    pose, kind = _infant_pose(rng)
  elif population == 'wheelchair':
    pose, kind = _wheelchair_pose(rng)
  else:
    pose, kind = _adult_pose(rng)
  skel = _forward(build, pose)
  fig = _Figure()
  if population == 'wheelchair':
    _wheelchair(rng, fig, skel, build, pose)
  elif kind == 'sit':
    _stool(rng, fig, skel, build)
  _dress(rng, fig, skel, build, pose, _outfit(rng, infant))
  return fig, _view(rng, population, kind)


def _view(rng: np.random.Generator, population: str, kind: str) -> np.ndarray:
  """Camera-from-body rotation: body (left, up, forward) → camera (x right, y down, z away)."""
  u = rng.uniform
  if population == 'infant':
    # Seen from above: a supine infant faces the camera, a prone one shows its back.
    yaw = {'supine': 0., 'prone': 180., 'side': _pick(rng, (-1., 1.)) * u(40, 80)}[kind]
    yaw += u(-20, 20)
    roll = rng.normal(0., 35.) if rng.random() < 0.75 else u(-180, 180)
    elevation = u(-15, 15)
  else:
    r = rng.random()
    if population == 'wheelchair':
      yaw = u(-180, 180) if r < 0.5 else u(-50, 50)
      elevation = u(0, 25)
    elif r < 0.6:
      yaw, elevation = u(-40, 40), u(-8, 15)
    elif r < 0.85:
      yaw, elevation = 180. + u(-40, 40), u(-8, 15)
    else:
      yaw, elevation = _pick(rng, (-1., 1.)) * u(55, 125), u(-8, 15)
    roll = u(-8, 8)
  flip = np.diag([1., -1., -1.])
  return _rz(roll) @ flip @ _rx(elevation) @ _ry(yaw)


def _extent(fig: _Figure, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(min, max) of the figure's drawn extent in the image plane at unit scale."""
  lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
  for prim in fig.prims:
    if prim.decal is not None:
      continue
    pts = prim.points @ view.T
    pad = max(prim.radii)
    if prim.axes is not None:
      pad = float(np.linalg.norm(view @ prim.axes, axis=1)[:2].max())
    lo = np.minimum(lo, pts[:, :2].min(axis=0) - pad)
    hi = np.maximum(hi, pts[:, :2].max(axis=0) + pad)
  return lo, hi


def _draw(canvas: render.Canvas, fig: _Figure, view: np.ndarray, scale: float, shift,
          owners: dict[str, int]):
  shift = np.asarray(shift, np.float64)
  cache: dict[int, Material] = {}

  def scaled(material: Material) -> Material:
    # Pattern periods and band lengths are in body units and cap axes in the body frame; the
    # canvas wants pixels and the camera frame.
    key = id(material)
    if key not in cache:
      out = material.scaled(scale)
      if out.cap is not None:
        axis, threshold, color = out.cap
        out = dataclasses.replace(out, cap=(tuple(view @ np.asarray(axis)), threshold, color))
      cache[key] = out
    return cache[key]

  for prim in fig.prims:
    if scale < prim.min_scale:
      continue
    pts = prim.points @ view.T * scale + shift
    material = scaled(prim.material)
    oid = owners[prim.group]
    tol = None if prim.decal is None else prim.decal * scale + 1.
    if prim.kind == 'tube':
      radii = np.maximum(np.asarray(prim.radii) * scale, 0.6)
      bulge = 0. if prim.decal is not None else 1.
      if prim.section is not None:
        # An elliptic section: the image-plane radius is the section's extent across the
        # projected axis, its depth the extent along the view.
        wide, deep = (view @ a for a in prim.section)
        axis = pts[1, :2] - pts[0, :2]
        normal = _unit([-axis[1], axis[0], 0.]) if np.hypot(*axis) > 1e-6 else np.array(
            [1., 0., 0.])
        rho = np.hypot(wide @ normal, deep @ normal)
        bulge = float(np.hypot(wide[2], deep[2]) / max(rho, 1e-3))
        radii = radii * rho
      render.tube(canvas, pts, radii, material, oid, bulge=bulge, closed=prim.closed,
                  decal_tol=tol)
    elif prim.kind == 'ellipsoid':
      render.ellipsoid(canvas, pts[0], view @ prim.axes * scale, material, oid, decal_tol=tol)
    else:
      hole = None if prim.hole is None else prim.hole @ view.T * scale + shift
      render.polygon(canvas, pts, material, oid, hole=hole, decal_tol=tol)


def _occluder(rng: np.random.Generator, canvas: render.Canvas, centre, size: float, z: float,
              infant: bool):
  """Something in front of a person: a box, blob, pole or bag; for an infant a toy or a fold of
  blanket."""
  oid = canvas.new_owner(-1)
  cx, cy = centre
  kind = ('toy', 'blanket')[rng.integers(2)] if infant else ('box', 'blob', 'pole', 'bag')[
      rng.integers(4)]
  if kind == 'blanket':
    material = render.random_material(
        rng, render.random_color(rng, saturation=(0.05, 0.5), value=(0.6, 1.)), size * 0.15,
        patterns=('plain', 'stripes', 'checks', 'dots', 'noise'))
    count = int(rng.integers(10, 15))
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(0, 0.3, count)
    radii = size * rng.uniform(1., 1.8) * (1 + 0.15 * rng.standard_normal(count))
    stretch = rng.uniform(0.4, 1.)
    render.polygon(canvas, np.stack([cx + radii * np.cos(angles), cy + stretch * radii * np.sin(
        angles), np.full(count, z)], axis=1), material, oid)
    return
  material = render.random_material(rng, render.random_color(rng), size * 0.25)
  if kind == 'box':
    half = rng.uniform(0.25, 0.6, 2) * size
    angle = rng.uniform(-0.3, 0.3)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T + [cx, cy]
    verts = np.concatenate([xy, np.full((4, 1), z)], axis=1)
    verts[:, 2] += rng.uniform(-0.2, 0.2, 4) * size
    render.polygon(canvas, verts, material, oid)
  elif kind in ('blob', 'toy'):
    render.ellipsoid(canvas, [cx, cy, z], np.diag(rng.uniform(0.2, 0.5, 3) * size), material,
                     oid)
  elif kind == 'pole':
    r = rng.uniform(0.06, 0.15) * size
    lean = rng.uniform(-0.3, 0.3) * size
    render.capsule(canvas, [cx - lean, cy - 2 * size, z], [cx + lean, cy + 2 * size, z], r, r,
                   material, oid)
  else:
    count = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(0.2, 0.45, count) * size
    verts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles),
                      np.full(count, z)], axis=1)
    render.polygon(canvas, verts, material, oid)


def _scene_layout(rng, population: str, h: int, w: int, figures, views):
  """Scale and image offset per person: [(scale, (dx, dy))], image = scale · camera + offset."""
  count = len(figures)
  single = count == 1
  layout = []
  slots = np.sort(rng.uniform(0., 1., count))
  for k, (fig, view) in enumerate(zip(figures, views)):
    lo, hi = _extent(fig, view)
    size = hi - lo
    if population == 'adult_wholebody' and single and rng.random() < 0.5:
      # A close-up, as most COCO-WholeBody faces and hands are: the head in the upper frame,
      # the legs often cut.
      scale = rng.uniform(1.1, 2.) * h / size[1]
      head = (fig.points['nose'] @ view.T)[:2] * scale
      target = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.12, 0.3) * h)
      layout.append((scale, (target[0] - head[0], target[1] - head[1])))
      continue
    if population == 'adult_wholebody':
      fraction = rng.uniform(0.6, 1.) if single else rng.uniform(0.45, 0.9)
    elif population == 'infant':
      fraction = rng.uniform(0.6, 1.) if single else rng.uniform(0.4, 0.65)
    else:
      fraction = rng.uniform(0.45, 0.95) if single else rng.uniform(0.35, 0.8)
    scale = fraction * min(h / size[1], (w / size[0]) * (1. if single else 0.8))
    box = size * scale
    if single:
      cx = rng.uniform(min(box[0] / 2, w / 2), max(w - box[0] / 2, w / 2))
    else:
      # Spread people across the width; neighbours may overlap by up to about half a body.
      cx = (slots[k] * 0.6 + 0.2 + 0.6 * (k - (count - 1) / 2) / count) * w
    cy = rng.uniform(min(box[1] / 2, h / 2), max(h - box[1] / 2, h / 2))
    if rng.random() < 0.12:
      # Some people are cut by the frame, as in real photographs.
      cx += _pick(rng, (-1., 1.)) * rng.uniform(0.15, 0.35) * box[0]
      cy += rng.uniform(-0.1, 0.3) * box[1]
    centre = (lo + hi) / 2 * scale
    layout.append((scale, (cx - centre[0], cy - centre[1])))
  return layout


def _keypoint_table(fig: _Figure, names: Sequence[str], view: np.ndarray, scale: float, shift,
                    canvas: render.Canvas, groups: np.ndarray, group: int) -> np.ndarray:
  """(K, 3) [x, y, v] of ``names``: v = 2 where the nearest surface at the point's pixel belongs
  to this instance (``group`` in the canvas's ``groups`` map) and lies no more than the point's
  slack in front of it, 1 elsewhere inside the image, 0 (and x = y = 0) outside."""
  h, w = canvas.height, canvas.width
  table = np.zeros((len(names), 3))
  for k, name in enumerate(names):
    x, y, z = fig.points[name] @ view.T * scale + np.asarray(shift)
    if not (0. <= x <= w - 1 and 0. <= y <= h - 1):
      continue
    i, j = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    slack = fig.slack[name] * scale + _DEPTH_TOLERANCE
    visible = groups[i, j] == group and canvas.depth[i, j] >= z - slack
    table[k] = (x, y, 2. if visible else 1.)
  return table


def render_scene(rng: np.random.Generator, population: str, max_people: int = 3) -> Scene:
  """Renders one image with 1..max_people annotated people of ``population``."""
  schema = skeletons.get(POPULATIONS[population])
  multi_p = {'adult': 0.3, 'adult_wholebody': 0.15, 'infant': 0.1, 'wheelchair': 0.2}[population]
  for _ in range(50):
    count = 1
    if max_people > 1 and rng.random() < multi_p:
      count = int(rng.integers(2, min(3, max_people) + 1))
    h = int(rng.integers(HEIGHT_RANGE[0], HEIGHT_RANGE[1] + 1))
    w = int(rng.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1))
    light = (rng.uniform(-0.8, 0.8), rng.uniform(-0.9, -0.1), -1.)
    ambient = rng.uniform(0.35, 0.6)
    if population == 'infant':
      background = render.blanket_background(rng, h, w)
    else:
      background = render.scene_background(rng, h, w, light, ambient)
    canvas = render.Canvas(background, light, ambient)
    figures, views = zip(*(_person(rng, population) for _ in range(count)))
    layout = _scene_layout(rng, population, h, w, figures, views)
    depth_order = rng.permutation(count)
    prop = canvas.new_owner(-1)
    placed = []
    for k in range(count):
      scale, (dx, dy) = layout[k]
      # People stand far apart in depth, so a nearer one occludes a farther one wholesale.
      shift = (dx, dy, 1e4 * (1 + depth_order[k]))
      owners = {'body': canvas.new_owner(k), 'gear': canvas.new_owner(k), 'prop': prop}
      _draw(canvas, figures[k], views[k], scale, shift, owners)
      placed.append((scale, shift))
      if rng.random() < (0.12 if population == 'infant' else 0.2):
        name = _pick(rng, schema.keypoints)
        x, y, _ = figures[k].points[name] @ views[k].T * scale + shift
        _occluder(rng, canvas, (x, y), scale * rng.uniform(0.08, 0.25), shift[2] - 2e3,
                  population == 'infant')
    groups = canvas.group_map()
    instances = []
    for k in range(count):
      scale, shift = placed[k]
      table = _keypoint_table(figures[k], schema.keypoints, views[k], scale, shift, canvas,
                              groups, k)
      instances.append(Instance(table, groups == k))
    if all(inst.mask.sum() >= 400 and (inst.keypoints[:, 2] == 2).sum() >= 5
           for inst in instances):
      break
  else:
    raise RuntimeError(f'could not place {population} people in 50 attempts')
  clean = canvas.image
  return Scene(render.finish(rng, clean), clean, background, instances)


# ---------------------------------------------------------------------------------------------
# COCO output.


def _rng(seed: int, split: str, population: str, index: int, shard: int = 0
         ) -> np.random.Generator:
  # Shard 0 keeps the key it had before datasets were sharded, so its cached data stays valid.
  return np.random.default_rng(np.random.SeedSequence(
      [seed, SPLITS.index(split), list(POPULATIONS).index(population), index]
      + ([shard] if shard else [])))


def _box(points: np.ndarray) -> list[float]:
  """[x, y, w, h] around (n, 2) points."""
  lo, hi = points.min(axis=0), points.max(axis=0)
  return [round(float(lo[0]), 2), round(float(lo[1]), 2), round(float(hi[0] - lo[0]), 2),
          round(float(hi[1] - lo[1]), 2)]


def _flat(table: np.ndarray) -> list[float]:
  out = []
  for x, y, v in table:
    out += [round(float(x), 2), round(float(y), 2), int(v)]
  return out


def _annotation(inst: Instance, schema: skeletons.Skeleton, ann_id: int, image_id: int) -> dict:
  rows, cols = ndimage.find_objects(inst.mask.astype(np.int32))[0]
  # COCO polygons cannot hold holes, so the area is that of the filled silhouette the polygons
  # describe (the gaps between wheel spokes count as the wheelchair's).
  area = int(ndimage.binary_fill_holes(inst.mask[rows, cols]).sum())
  segmentation = [[round(float(c), 2) for c in outline.ravel()]
                  for outline in render.mask_outlines(inst.mask)]
  ann = {
      'id': ann_id, 'image_id': image_id, 'category_id': 1,
      # pycocotools' toBbox of the mask: first column and row, then widths in whole pixels.
      'bbox': [float(cols.start), float(rows.start), float(cols.stop - cols.start),
               float(rows.stop - rows.start)],
      'area': float(area), 'iscrowd': 0,
      'num_keypoints': int((inst.keypoints[:, 2] > 0).sum()),
      'segmentation': segmentation,
  }
  # A schema with COCO-WholeBody's parts is written in COCO-WholeBody's split-field format, so
  # the synthetic data exercises the reader path real WholeBody files take.
  split_parts = [p for p, _, _ in schema.parts if p in coco.WHOLEBODY_FIELDS and p != 'body']
  if not split_parts:
    ann['keypoints'] = _flat(inst.keypoints)
    return ann
  ann['keypoints'] = _flat(inst.keypoints[schema.part('body')])
  for part in split_parts:
    field = coco.WHOLEBODY_FIELDS[part]
    table = inst.keypoints[schema.part(part)]
    ann[field] = _flat(table)
    labelled = table[table[:, 2] > 0, :2]
    valid = len(labelled) > 0
    ann[f'{part}_valid'] = bool(valid)
    if part != 'foot':
      ann[f'{part}_box'] = _box(labelled) if valid else [0., 0., 0., 0.]
  return ann


def _check(out_dir, population: str, split: str, num: int, seed: int):
  if population not in POPULATIONS:
    raise ValueError(f'unknown population {population!r}; choose from {", ".join(POPULATIONS)}')
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; choose from {", ".join(SPLITS)}')
  if isinstance(num, bool) or not isinstance(num, int) or num < 1:
    raise ValueError(f'num must be a positive integer, got {num!r}')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f'output path {out_dir!r} exists and is not a directory')


def generate(out_dir: str | os.PathLike, population: str, split: str, num: int, seed: int,
             shard: int = 0) -> str:
  """Writes ``num`` synthetic person instances of ``population`` as a COCO dataset in
  ``out_dir`` and returns the annotation file's path.

  ``shard`` > 0 draws an independent stream of the same (seed, split, population): large
  datasets are generated as shards in parallel (``vitpose_jax.data.pipeline``).

  Images ``images/000000000001.jpg`` … hold one or more people each (so there are at most ``num``
  images). JPEGs of an earlier run in ``out_dir/images`` are replaced; the annotation file is
  written last, atomically, so its presence marks a complete dataset.
  """
  _check(out_dir, population, split, num, seed)
  schema = skeletons.get(POPULATIONS[population])
  image_dir = os.path.join(out_dir, IMAGE_DIR)
  os.makedirs(image_dir, exist_ok=True)
  ann_path = os.path.join(out_dir, ANNOTATION_FILE)
  if os.path.exists(ann_path):
    os.remove(ann_path)
  for name in sorted(os.listdir(image_dir)):
    if re.fullmatch(r'\d{12}\.jpg', name):
      os.remove(os.path.join(image_dir, name))
  images, annotations = [], []
  done = 0
  while done < num:
    image_id = len(images) + 1
    scene = render_scene(_rng(seed, split, population, image_id, shard), population,
                         max_people=min(3, num - done))
    file_name = f'{image_id:012d}.jpg'
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format='JPEG', quality=JPEG_QUALITY)
    with open(os.path.join(image_dir, file_name), 'wb') as f:
      f.write(buffer.getvalue())
    h, w = scene.image.shape[:2]
    images.append({'id': image_id, 'file_name': file_name, 'width': w, 'height': h})
    for inst in scene.instances:
      done += 1
      annotations.append(_annotation(inst, schema, done, image_id))
  dataset = {
      'info': {'description': f'vitpose_jax synthetic {population} ({split})',
               'generator_version': GENERATOR_VERSION, 'population': population,
               'split': split, 'seed': seed, 'schema': schema.name,
               **({'shard': shard} if shard else {})},
      'images': images,
      'annotations': annotations,
      'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                      'keypoints': list(schema.keypoints),
                      'skeleton': [[a + 1, b + 1] for a, b in schema.link_indices]}],
  }
  tmp = ann_path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(dataset, f, separators=(',', ':'))
  os.replace(tmp, ann_path)
  return ann_path


# ---------------------------------------------------------------------------------------------
# Preview.


def write_preview(data_dir: str | os.PathLike, path: str | os.PathLike, *, grid: int = 4,
                  tile: int = 256):
  """A grid×grid PNG of the dataset's first images with keypoints and links drawn (filled dots
  visible, rings occluded)."""
  with open(os.path.join(data_dir, ANNOTATION_FILE)) as f:
    dataset = json.load(f)
  schema = skeletons.get(dataset['info']['schema'])
  by_image: dict[int, list[dict]] = {}
  for ann in dataset['annotations']:
    by_image.setdefault(ann['image_id'], []).append(ann)
  sheet = Image.new('RGB', (grid * tile, grid * tile), (24, 24, 24))
  small = schema.num_keypoints > 30
  for k, info in enumerate(dataset['images'][:grid * grid]):
    f = tile / max(info['width'], info['height'])
    size = (round(info['width'] * f), round(info['height'] * f))
    with Image.open(os.path.join(data_dir, IMAGE_DIR, info['file_name'])) as source:
      image = source.convert('RGB').resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for ann in by_image.get(info['id'], []):
      kps = coco.annotation_keypoints(ann, schema)
      # Pixel centres sit at integer coordinates; PIL draws at pixel corners, hence +0.5.
      xy = (kps[:, :2] + 0.5) * f
      for (a, b), color in zip(schema.link_indices, schema.link_colors):
        if kps[a, 2] > 0 and kps[b, 2] > 0:
          draw.line([tuple(xy[a]), tuple(xy[b])], fill=tuple(color), width=1 if small else 2)
      for p, v, color in zip(xy, kps[:, 2], schema.keypoint_colors):
        if v == 0:
          continue
        r = 1.2 if small else 2.5
        box = [p[0] - r, p[1] - r, p[0] + r, p[1] + r]
        draw.ellipse(box, fill=tuple(color) if v == 2 else None, outline=tuple(color))
    sheet.paste(image, ((k % grid) * tile + (tile - size[0]) // 2,
                        (k // grid) * tile + (tile - size[1]) // 2))
  sheet.save(path)


# ---------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(2, f'{self.prog}: error: {message}\n')


def _int_at_least(minimum: int):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
    return value
  return parse


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog='python -m vitpose_jax.data.synthetic',
                   description='Generate a synthetic COCO-format pose dataset.')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--population', required=True, choices=list(POPULATIONS),
                      help='who is drawn (and so the keypoint schema)')
  parser.add_argument('--split', required=True, choices=SPLITS,
                      help='each split has its own random stream')
  parser.add_argument('--num', required=True, type=_int_at_least(1),
                      help='number of person instances')
  parser.add_argument('--seed', type=_int_at_least(0), default=0, help='random seed (default 0)')
  parser.add_argument('--preview', help='also write a PNG grid of images with keypoints drawn')
  args = parser.parse_args(argv)
  try:
    path = generate(args.out, args.population, args.split, args.num, args.seed)
    if args.preview:
      write_preview(args.out, args.preview)
  except (OSError, ValueError) as e:
    parser.exit(1, f'{parser.prog}: error: {e}\n')
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
