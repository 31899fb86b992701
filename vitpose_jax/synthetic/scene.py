"""Scenes: people of one population posed, dressed, seen, framed and z-buffered together with
their furniture and occluders onto a backdrop, and every keypoint labelled from the depth and
owner maps of what was drawn.

Image coordinates: pixels, x right and y down, the centre of pixel (row i, column j) at (j, i).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vitpose_jax import skeletons
from vitpose_jax.synthetic import populations, render, styles
from vitpose_jax.synthetic.body import OUTFITS, Figure, dress, forward, normalized, pick, vary
from vitpose_jax.synthetic.populations import Population
from vitpose_jax.synthetic.poses import POSES
from vitpose_jax.synthetic.props import BACKGROUNDS, FURNITURE, occluder
from vitpose_jax.synthetic.render import Material
from vitpose_jax.synthetic.styles import Style

WIDTH_RANGE = (320, 512)
HEIGHT_RANGE = (256, 448)

# Pixels of depth a keypoint may lie behind the nearest surface at its pixel and still count as
# visible, on top of its part's own thickness.
_DEPTH_TOLERANCE = 1.5


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


def _person(rng: np.random.Generator, population: Population, style: Style = styles.PLAIN,
            style_rng: np.random.Generator | None = None) -> tuple[Figure, np.ndarray]:
  """A dressed figure of ``population`` and the camera-from-body rotation it is seen with, in
  ``style`` (whose own draws come from ``style_rng``)."""
  build = vary(rng, population.build)
  pose, kind = POSES[population.pose](rng)
  rig = forward(build, pose)
  fig = Figure()
  if kind in population.furniture:
    FURNITURE[population.furniture[kind]](rng, fig, rig, build, pose)
  dress(rng, fig, rig, build, pose, style.outfit(style_rng, OUTFITS[population.outfit](rng)))
  return fig, style.view(style_rng, population.view.sample(rng, kind))


def _extent(fig: Figure, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _draw(canvas: render.Canvas, fig: Figure, view: np.ndarray, scale: float, shift,
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
        normal = normalized([-axis[1], axis[0], 0.]) if np.hypot(*axis) > 1e-6 else np.array(
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


def _scene_layout(rng, population: Population, h: int, w: int, figures, views,
                  zoom: float = 1.):
  """Scale and image offset per person: [(scale, (dx, dy))], image = scale · camera + offset;
  ``zoom`` multiplies every person's size."""
  count = len(figures)
  single = count == 1
  layout = []
  slots = np.sort(rng.uniform(0., 1., count))
  for k, (fig, view) in enumerate(zip(figures, views)):
    lo, hi = _extent(fig, view)
    size = hi - lo
    if single and population.close_up and rng.random() < population.close_up:
      # A close-up: the head in the upper frame, the legs often cut.
      scale = rng.uniform(1.1, 2.) * zoom * h / size[1]
      head = (fig.points['nose'] @ view.T)[:2] * scale
      target = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.12, 0.3) * h)
      layout.append((scale, (target[0] - head[0], target[1] - head[1])))
      continue
    fraction = rng.uniform(*(population.size_alone if single else population.size_crowd)) * zoom
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
      cx += pick(rng, (-1., 1.)) * rng.uniform(0.15, 0.35) * box[0]
      cy += rng.uniform(-0.1, 0.3) * box[1]
    centre = (lo + hi) / 2 * scale
    layout.append((scale, (cx - centre[0], cy - centre[1])))
  return layout


def _keypoint_table(fig: Figure, names: Sequence[str], view: np.ndarray, scale: float, shift,
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


def render_scene(rng: np.random.Generator, population: str | Population,
                 max_people: int = 3, *, style: str | Style = 'plain',
                 style_rng: np.random.Generator | None = None) -> Scene:
  """Renders one image with 1..max_people annotated people of ``population`` (a registered name
  or a record) in ``style`` (a registered name or a record; see
  :mod:`~vitpose_jax.synthetic.styles`), whose own draws come from ``style_rng`` (default
  :func:`~vitpose_jax.synthetic.styles.style_rng` of ``rng``). ValueError for an unknown
  population or style; RuntimeError if 50 attempts leave someone too hidden to label."""
  population = populations.get(population)
  style = styles.get(style)
  if style_rng is None:
    style_rng = styles.style_rng(rng, style)
  schema = skeletons.get(population.schema)
  for _ in range(50):
    count = 1
    if max_people > 1 and rng.random() < population.crowd:
      count = int(rng.integers(2, min(3, max_people) + 1))
    h = int(rng.integers(HEIGHT_RANGE[0], HEIGHT_RANGE[1] + 1))
    w = int(rng.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1))
    light = (rng.uniform(-0.8, 0.8), rng.uniform(-0.9, -0.1), -1.)
    ambient = rng.uniform(0.35, 0.6)
    light, ambient = style.lighting(style_rng, light, ambient)
    background = style.backdrop(
        style_rng, BACKGROUNDS[population.background](rng, h, w, light, ambient))
    canvas = render.Canvas(background, light, ambient)
    figures, views = zip(*(_person(rng, population, style, style_rng) for _ in range(count)))
    layout = _scene_layout(rng, population, h, w, figures, views, style.size(style_rng))
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
      if rng.random() < population.occluder:
        name = pick(rng, schema.keypoints)
        x, y, _ = figures[k].points[name] @ views[k].T * scale + shift
        occluder(rng, canvas, (x, y), scale * rng.uniform(0.08, 0.25), shift[2] - 2e3,
                 population.occluders)
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
    raise RuntimeError(f'could not place {population.name} people in 50 attempts')
  clean = canvas.image
  return Scene(style.finish(rng, style_rng, clean), clean, background, instances)


