"""Pose samplers: joint angles (degrees) for one person, by the kind of pose a population takes.

A sampler draws ``(pose, kind)``: the pose holds every angle :func:`vitpose_jax.synthetic.body.
forward` reads (per-side names prefixed 'l_' / 'r_', see ``body.SIDE_ANGLES``) and the face's
expression; ``kind`` names what was drawn ('stand', 'sit', 'supine', ...) for the view and the
furniture that population records key on it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vitpose_jax.synthetic.body import SIDE_ANGLES


def neutral_pose() -> dict[str, float]:
  pose = {k: 0. for k in ('lean', 'bend', 'twist', 'head_yaw', 'head_pitch', 'head_roll',
                          'mouth', 'smile', 'brow')}
  for s in 'lr':
    pose.update({f'{s}_{k}': 0. for k in SIDE_ANGLES})
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


def everyday(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """A standing, walking, reaching, sitting or squatting adult; returns (pose, kind)."""
  pose = neutral_pose()
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


def lying(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """Supine or prone infant poses with flexed, abducted limbs (MINI-RGBD-like)."""
  pose = neutral_pose()
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


def seated(rng: np.random.Generator) -> tuple[dict[str, float], str]:
  """Seated with hips and knees near 90°; arms are placed later (on the rims or free)."""
  pose = neutral_pose()
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


# Pose samplers by name, as population records name them.
POSES: dict[str, Callable[[np.random.Generator], tuple[dict[str, float], str]]] = {
    'everyday': everyday,
    'lying': lying,
    'seated': seated,
}
