"""The figure: a forward-kinematics skeleton of given proportions and joint angles, dressed in
shaded tubes and ellipsoids (clothing, hair, a face with drawn features, five-fingered hands,
shoes), with every keypoint labelled on the geometry that draws it.

Body frame: x = the person's left, y = up, z = the person's forward; lengths are fractions of
standing height (body units). A person's LEFT keypoint is their anatomical left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vitpose_jax.synthetic import render
from vitpose_jax.synthetic.render import Material

# A joint's slack as a multiple of the radius of the thickest part meeting there.
_JOINT_SLACK = 1.1
SIDES = (('left', 1.), ('right', -1.))


def rx(deg: float) -> np.ndarray:
  """Rotation about the left axis: positive tilts up toward forward (leaning, nodding)."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[1., 0., 0.], [0., c, -s], [0., s, c]])


def ry(deg: float) -> np.ndarray:
  """Rotation about the up axis: positive turns forward toward the person's left."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0., s], [0., 1., 0.], [-s, 0., c]])


def rz(deg: float) -> np.ndarray:
  """Rotation about the forward axis: positive tilts down toward the person's left."""
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0.], [s, c, 0.], [0., 0., 1.]])


def normalized(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / (np.linalg.norm(v) + 1e-12)


# The per-side joint angles (degrees) of a pose, named 'l_<angle>' and 'r_<angle>' in it.
SIDE_ANGLES = ('sh_flex', 'sh_abd', 'sh_rot', 'elbow', 'pron', 'wrist', 'wrist_dev', 'curl',
               'thumb', 'hip_flex', 'hip_abd', 'hip_rot', 'knee', 'ankle', 'toe_out')

_DOWN = np.array([0., -1., 0.])


@dataclasses.dataclass(frozen=True)
class Build:
  """Body proportions in body units; radii pairs are (proximal, distal). A population's build is
  its typical person, :func:`vary` draws each person around it."""

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
  faint_brows: bool      # brows nearer the skin colour (infants)


def vary(rng: np.random.Generator, build: Build) -> Build:
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


def _head(build: Build) -> _Head:
  a = np.array([0., _CHIN_Y + build.chin, 0.1])
  b, rb = np.array(_CROWN[0]), _CROWN[1]
  nose = (np.array(_NOSE[0]) * [1, build.face_scale, 1] - [0., build.face_shift, 0.],
          np.array(_NOSE[1]) * build.face_scale)
  # Ears sit on the egg's side at their height.
  y, z = _EAR[0]
  t = np.clip((y - a[1]) / (b[1] - a[1]), 0., 1.)
  x = 0.97 * (build.chin + (rb - build.chin) * t)
  ears = tuple((np.array([sign * x, y, z]), np.array(_EAR[1])) for _, sign in SIDES)
  return _Head(a, build.chin, b, rb, nose, ears)


def _face_landmarks(head: _Head, build: Build, pose: dict[str, float],
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
class Rig:
  """Joint positions and part frames (3×3, columns = part's left, up, forward) in body units."""

  joints: dict[str, np.ndarray]
  frames: dict[str, np.ndarray]


def forward(build: Build, pose: dict[str, float]) -> Rig:
  j: dict[str, np.ndarray] = {'pelvis': np.zeros(3)}
  f: dict[str, np.ndarray] = {}
  pos = j['pelvis']
  for k, name in enumerate(('spine', 'spine1', 'spine2', 'neck'), start=1):
    # The spine bends gradually: each vertebral segment takes a quarter of the torso's angles.
    rot = rx(pose['lean'] * k / 4) @ rz(pose['bend'] * k / 4) @ ry(pose['twist'] * k / 4)
    pos = pos + rot @ [0., build.trunk / 4, 0.]
    j[name] = pos
  torso = rot
  f['torso'] = torso
  j['atlas'] = j['neck'] + torso @ [0., build.neck, 0.]
  head = torso @ ry(pose['head_yaw']) @ rx(pose['head_pitch']) @ rz(pose['head_roll'])
  f['head'] = head
  j['head_origin'] = j['atlas'] + head @ (np.array([0., 0.85, 0.25]) * build.head)
  for side, sign in SIDES:
    g = {k: pose[f'{side[0]}_{k}'] for k in SIDE_ANGLES}
    shoulder = j['neck'] + torso @ [sign * build.shoulder, -build.shoulder_drop, 0.]
    j[f'{side}_collar'] = j['neck'] + torso @ [sign * 0.35 * build.shoulder, -0.02, 0.01]
    upper = torso @ rx(-g['sh_flex']) @ rz(sign * g['sh_abd']) @ ry(-sign * g['sh_rot'])
    elbow = shoulder + upper @ (_DOWN * build.upper_arm)
    fore = upper @ rx(-g['elbow'])
    j[f'{side}_shoulder'], j[f'{side}_elbow'] = shoulder, elbow
    j[f'{side}_wrist'] = elbow + fore @ (_DOWN * build.forearm)
    f[f'{side}_hand'] = (fore @ ry(-sign * g['pron']) @ rz(-sign * g['wrist'])
                         @ rx(-g['wrist_dev']))
    hip = np.array([sign * build.hip, -build.hip_drop, 0.])
    thigh = rx(-g['hip_flex']) @ rz(sign * g['hip_abd']) @ ry(sign * g['hip_rot'])
    knee = hip + thigh @ (_DOWN * build.thigh)
    shank = thigh @ rx(g['knee'])
    j[f'{side}_hip'], j[f'{side}_knee'] = hip, knee
    j[f'{side}_ankle'] = knee + shank @ (_DOWN * build.shank)
    f[f'{side}_foot'] = shank @ ry(sign * g['toe_out']) @ rx(g['ankle'])
  return Rig(j, f)


def reach(skel: Rig, build: Build, side: str, sign: float, target, pole, palm):
  """Two-bone IK: puts the wrist at ``target`` (or as near as the arm reaches), the elbow toward
  ``pole`` and the palm facing ``palm``."""
  shoulder = skel.joints[f'{side}_shoulder']
  l1, l2 = build.upper_arm, build.forearm
  offset = np.asarray(target) - shoulder
  dist = float(np.clip(np.linalg.norm(offset), abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3))
  axis = normalized(offset)
  along = (l1 * l1 - l2 * l2 + dist * dist) / (2 * dist)
  bend = normalized(np.asarray(pole) - (np.asarray(pole) @ axis) * axis)
  elbow = shoulder + along * axis + np.sqrt(max(l1 * l1 - along * along, 0.)) * bend
  wrist = shoulder + dist * axis
  skel.joints[f'{side}_elbow'], skel.joints[f'{side}_wrist'] = elbow, wrist
  down = normalized(wrist - elbow)
  normal = normalized(np.asarray(palm) - (np.asarray(palm) @ down) * down)
  # Hand frame columns (left, up, forward) with up = -along the hand and left = -sign·palm.
  col_x = -sign * normal
  col_y = -down
  skel.frames[f'{side}_hand'] = np.stack([col_x, col_y, np.cross(col_x, col_y)], axis=1)


# ---------------------------------------------------------------------------------------------
# The drawable figure.


@dataclasses.dataclass
class Prim:
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


class Figure:
  """A person's primitives and labelled points (body units, body frame)."""

  def __init__(self):
    self.prims: list[Prim] = []
    self.points: dict[str, np.ndarray] = {}
    self.slack: dict[str, float] = {}

  def label(self, name: str, point, slack: float):
    self.points[name] = np.asarray(point, np.float64)
    self.slack[name] = float(slack)

  def capsule(self, p0, p1, r0, r1, material, group='body', section=None):
    self.tube([p0, p1], [r0, r1], material, group, section=section)

  def tube(self, points, radii, material, group='body', section=None, closed=False):
    self.prims.append(Prim('tube', np.asarray(points, np.float64), material, group,
                           tuple(float(r) for r in radii), section=section, closed=closed))

  def ellipsoid(self, centre, axes, material, group='body'):
    self.prims.append(Prim('ellipsoid', np.array([centre], np.float64), material, group,
                           axes=np.asarray(axes, np.float64)))

  def polygon(self, verts, material, group='body', hole=None):
    self.prims.append(Prim('polygon', np.asarray(verts, np.float64), material, group,
                           hole=None if hole is None else np.asarray(hole, np.float64)))

  def decal_line(self, points, radius, material, tol, min_scale):
    points = np.asarray(points, np.float64)
    self.prims.append(Prim('tube', points, material, 'body', (radius,) * len(points),
                           decal=tol, min_scale=min_scale))

  def decal_polygon(self, points, material, tol, min_scale):
    self.prims.append(Prim('polygon', np.asarray(points, np.float64), material, 'body',
                           decal=tol, min_scale=min_scale))


@dataclasses.dataclass(frozen=True)
class Outfit:
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


def pick(rng, options):
  return options[rng.integers(len(options))]


def jitter(rng, color, amount=0.06):
  return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0., 1.)) for c in color)


_PATTERN_SCALE = 0.04  # body units per clothing pattern period


def _skin(rng: np.random.Generator) -> tuple[float, float, float]:
  return jitter(rng, pick(rng, _SKIN_TONES), 0.04)


def everyday_clothes(rng: np.random.Generator) -> Outfit:
  """Shirts of any colour and pattern, mostly long trousers, shoes; hair of any colour, mostly."""
  skin = _skin(rng)
  trousers = pick(rng, ((0.15, 0.2, 0.35), (0.1, 0.1, 0.1), (0.55, 0.48, 0.35),
                        (0.3, 0.3, 0.32), render.random_color(rng)))
  return Outfit(
      skin=Material(skin), hair=pick(rng, _HAIR_COLORS),
      hair_cap=float(rng.uniform(-0.25, 0.1)) if rng.random() < 0.92 else None,
      long_hair=rng.random() < 0.3,
      shirt=render.random_material(rng, render.random_color(rng), _PATTERN_SCALE),
      sleeve=pick(rng, ('long', 'long', 'short', 'none')),
      pants=render.random_material(rng, jitter(rng, trousers), _PATTERN_SCALE,
                                   patterns=('plain', 'plain', 'noise', 'checks', 'stripes')),
      legs=pick(rng, ('long', 'long', 'long', 'short')),
      shoes=Material(render.random_color(rng, value=(0.05, 0.5)), gloss=0.15),
      lips=tuple(c * f for c, f in zip(skin, (0.85, 0.55, 0.55))), iris=pick(rng, _IRIS_COLORS),
      waist=float(rng.uniform(0.3, 0.45)),
  )


def baby_clothes(rng: np.random.Generator) -> Outfit:
  """A pastel onesie or only a diaper, bare or socked feet, little hair, never grey."""
  skin = _skin(rng)
  pastel = lambda: render.random_color(rng, saturation=(0.05, 0.5), value=(0.6, 1.))
  onesie = render.random_material(rng, pastel(), _PATTERN_SCALE, patterns=(
      'plain', 'plain', 'stripes', 'dots', 'checks'))
  dressed = rng.random() < 0.75
  diaper = Material(jitter(rng, (0.95, 0.95, 0.93), 0.03))
  return Outfit(
      skin=Material(skin), hair=pick(rng, _HAIR_COLORS[:5]),
      hair_cap=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.6 else None, long_hair=False,
      shirt=onesie if dressed else Material(skin),
      sleeve=pick(rng, ('long', 'short', 'none')) if dressed else 'none',
      pants=onesie if dressed else diaper, legs=pick(rng, ('long', 'short')) if dressed
      else 'short', shoes=Material(skin) if rng.random() < 0.6 else Material(pastel()),
      lips=tuple(c * f for c, f in zip(skin, (0.92, 0.62, 0.6))), iris=pick(rng, _IRIS_COLORS),
      waist=float(rng.uniform(0.2, 0.35)),
  )


# Clothing styles by name, as population records name them.
OUTFITS: dict[str, Callable[[np.random.Generator], Outfit]] = {
    'everyday': everyday_clothes,
    'baby': baby_clothes,
}


def _banded(start: Material, length: float, rest: Material) -> Material:
  """``start`` for the first ``length`` body units along a capsule, then ``rest``."""
  return dataclasses.replace(rest, start=start, start_length=length)


def dress(rng: np.random.Generator, fig: Figure, skel: Rig, build: Build,
          pose: dict[str, float], outfit: Outfit):
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
  for side, _ in SIDES:
    fig.label(f'{side}_collar', j[f'{side}_collar'], torso_depth)
    # A joint's slack is the thickest part meeting there, so its own limb does not hide it. The
    # trunk's joints get the trunk's half-width: a far shoulder or hip still shows at the body's
    # side in a three-quarter view and is hidden only from about 50 degrees on.
    fig.label(f'{side}_shoulder', j[f'{side}_shoulder'], _JOINT_SLACK * build.chest_width)
    fig.label(f'{side}_hip', j[f'{side}_hip'],
              _JOINT_SLACK * max(build.pelvis_width, build.r_thigh[0]))
  _dress_head(rng, fig, skel, build, pose, outfit)
  for side, sign in SIDES:
    _dress_arm(fig, skel, build, pose, outfit, side, sign)
    _dress_leg(fig, skel, build, outfit, side, sign)


def _dress_head(rng, fig: Figure, skel: Rig, build: Build, pose, outfit: Outfit):
  frame, origin, unit = skel.frames['head'], skel.joints['head_origin'], build.head
  to_body = lambda p: origin + frame @ (np.asarray(p) * unit)
  head = _head(build)
  skin = outfit.skin
  ellipsoid = lambda centre, radii, material: fig.ellipsoid(
      to_body(centre), frame @ np.diag(np.asarray(radii) * unit), material)
  egg = skin
  if outfit.hair_cap is not None:
    egg = dataclasses.replace(skin, cap=(tuple(frame @ normalized([0., 0.8, -0.6])), outfit.hair_cap,
                                         outfit.hair))
  fig.capsule(to_body(head.a), to_body(head.b), head.ra * unit, head.rb * unit, egg,
              section=(frame[:, 0], frame[:, 2] * _HEAD_DEPTH))
  ellipsoid(*head.nose, skin)
  for centre, radii in head.ears:
    ellipsoid(centre, radii, skin)
  if outfit.long_hair and outfit.hair_cap is not None:
    ellipsoid((0., -0.55, -0.62), (1.05, 1.2, 0.62), Material(outfit.hair))
  fig.label('head', to_body((head.a + head.b) / 2), _HEAD_DEPTH * head.rb * unit)
  for (side, sign), (centre, radii) in zip(SIDES, head.ears):
    fig.label(f'{side}_ear', to_body(centre + [sign * radii[0] * 0.6, 0., 0.]),
              _JOINT_SLACK * radii.max() * unit)
  face = _face_landmarks(head, build, pose, rng)
  body_face = np.array([to_body(p) for p in face])
  for i, p in enumerate(body_face):
    fig.label(f'face-{i}', p, 0.1 * unit)
  fig.label('nose', body_face[30], 0.1 * unit)
  for (side, _), eye in zip(SIDES, (slice(42, 48), slice(36, 42))):
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
  if build.faint_brows:
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


def _dress_arm(fig: Figure, skel: Rig, build: Build, pose, outfit: Outfit, side: str,
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
  direction = normalized(0.62 * along + 0.7 * across + 0.35 * palm)
  points = [base]
  for k, length in enumerate((0.17, 0.13, 0.11)):
    bend = np.radians(thumb_curl * (25., 40., 45.)[k])
    direction = normalized(np.cos(bend) * direction + np.sin(bend) * normalized(palm - 0.6 * across))
    points.append(points[-1] + size * length * direction)
  fig.tube(points, np.array([0.07, 0.06, 0.055, 0.048]) * size, outfit.skin)
  for k, p in enumerate(points, start=1):
    fig.label(f'{side}_thumb{k}', p, 0.08 * size)
  for name, (a, b), phalanges, spread, radius in _FINGERS:
    spread_dir = normalized(along + np.tan(np.radians(spread * (1.2 - 0.6 * curl))) * across)
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


def _dress_leg(fig: Figure, skel: Rig, build: Build, outfit: Outfit, side: str,
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


