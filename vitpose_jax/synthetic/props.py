"""Everything around the person: furniture fitted to a posed skeleton (a stool under a sitting
person, a prop and not part of the instance; a manual wheelchair, gear that is part of the
instance's silhouette and box), occluders in front of people and backdrops.

A furniture builder takes ``(rng, fig, rig, build, pose)`` and adds primitives and labelled
points to ``fig``; it may move the arms (a wheelchair user's hands on the push rims).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vitpose_jax.synthetic import render
from vitpose_jax.synthetic.body import SIDES, Build, Figure, Rig, jitter, reach
from vitpose_jax.synthetic.render import Material


def stool(rng: np.random.Generator, fig: Figure, skel: Rig, build: Build,
          pose: dict[str, float]):
  """A seat block under a sitting adult (a prop: not part of the instance)."""
  del pose  # the seat fits the skeleton, whatever its arms do
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


def wheelchair(rng: np.random.Generator, fig: Figure, skel: Rig, build: Build,
               pose: dict[str, float]):
  """A manual wheelchair fitted to a seated skeleton; moves the hands onto the push rims when
  the pose says so. Its primitives are 'gear': part of the instance's silhouette and box."""
  j = skel.joints
  frame = Material(render.random_color(rng, saturation=(0., 0.8), value=(0.1, 0.8)), gloss=0.5)
  tyre = Material(jitter(rng, (0.1, 0.1, 0.11), 0.04), gloss=0.1)
  metal = Material((0.72, 0.73, 0.75), gloss=0.7)
  fabric = Material(jitter(rng, (0.12, 0.12, 0.14), 0.08))
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
  for side, sign in SIDES:
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
  for side, sign in SIDES:
    if rng.random() < 0.6:
      hub = np.array([sign * hub_x, ground + radius, hub_z])
      angle = np.radians(rng.uniform(45, 120))
      target = hub + [sign * 0.03, radius * 0.82 * np.sin(angle), radius * 0.82 * np.cos(angle)]
      reach(skel, build, side, sign, target, pole=[sign * 0.5, 0., -1.],
            palm=[sign * 0.6, -1., 0.])
      pose[f'{side[0]}_curl'] = rng.uniform(0.5, 0.9)


# Occluder kinds: a box, a blob, a pole, a bag; a toy or a fold of blanket (in a cot).
OCCLUDERS = ('box', 'blob', 'pole', 'bag', 'toy', 'blanket')


def occluder(rng: np.random.Generator, canvas: render.Canvas, centre, size: float, z: float,
             kinds: Sequence[str]):
  """Something in front of a person, one of ``kinds`` (see ``OCCLUDERS``) with equal odds,
  drawn straight onto the canvas at depth ``z`` around ``centre`` (pixels), ``size`` across."""
  oid = canvas.new_owner(-1)
  cx, cy = centre
  kind = kinds[rng.integers(len(kinds))]
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


def _room(rng: np.random.Generator, h: int, w: int, light, ambient: float) -> np.ndarray:
  return render.scene_background(rng, h, w, light, ambient)


def _blanket(rng: np.random.Generator, h: int, w: int, light, ambient: float) -> np.ndarray:
  del light, ambient  # a blanket is lit flat, from the room
  return render.blanket_background(rng, h, w)


# Backdrops by name, as population records name them: (rng, h, w, light, ambient) → (h, w, 3).
BACKGROUNDS: dict[str, Callable[..., np.ndarray]] = {'room': _room, 'blanket': _blanket}


# Furniture builders by name, as population records name them.
FURNITURE: dict[str, Callable[[np.random.Generator, Figure, Rig, Build, dict[str, float]], None]] = {
    'stool': stool,
    'wheelchair': wheelchair,
}
