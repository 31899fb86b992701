"""Rasterising for the synthetic generator: a z-buffered canvas of shaded primitives, surface
patterns, backgrounds and mask outlines.

Conventions: image coordinates are (x, y) = (column, row) in pixels, x right and y down, and the
centre of pixel (row i, column j) is (x, y) = (j, i), so the pixel covers [j - 0.5, j + 0.5) ×
[i - 0.5, i + 0.5) (the COCO/mmpose keypoint convention). Depth z is in pixels as well and grows
away from the camera; projection is orthographic along z. Colours are float RGB in [0, 1].

Every primitive is evaluated at pixel centres inside its bounding window only, and the canvas keeps
a z-buffer and an owner map (which primitive drew each pixel), from which the generator reads
silhouettes and keypoint visibility.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

RGB = tuple[float, float, float]
_FAR = np.float32(1e30)
_RUN = 7  # segments per window in a tube

# A fixed value-noise lattice: textures must not consume the scene's random stream per pixel, and
# a constant lattice sampled at random offsets and scales is as varied as a fresh one.
_LATTICE_SIZE = 64
_LATTICE = np.random.default_rng(20240611).random((_LATTICE_SIZE, _LATTICE_SIZE)).astype(np.float32)


def value_noise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Smooth periodic noise in [0, 1] at lattice coordinates (x, y); one lattice cell per unit."""
  x0 = np.floor(x)
  y0 = np.floor(y)
  fx = x - x0
  fy = y - y0
  # Smoothstep weights hide the lattice's grid lines, which linear weights leave visible.
  fx = fx * fx * (3 - 2 * fx)
  fy = fy * fy * (3 - 2 * fy)
  i0 = y0.astype(np.int64) % _LATTICE_SIZE
  j0 = x0.astype(np.int64) % _LATTICE_SIZE
  i1 = (i0 + 1) % _LATTICE_SIZE
  j1 = (j0 + 1) % _LATTICE_SIZE
  top = _LATTICE[i0, j0] * (1 - fx) + _LATTICE[i0, j1] * fx
  bottom = _LATTICE[i1, j0] * (1 - fx) + _LATTICE[i1, j1] * fx
  return (top * (1 - fy) + bottom * fy).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Material:
  """How a surface is coloured.

  Attributes:
    color: base RGB.
    pattern: 'plain', 'stripes', 'checks', 'dots' or 'noise', mixing ``color2`` into ``color``.
    color2: the pattern's second colour.
    period: pattern period in pixels of surface coordinates.
    angle: pattern direction in the surface's (u, v) plane, radians.
    gloss: strength of a specular highlight (0 for cloth and skin, higher for metal).
    cap: ``(axis, threshold, colour)``: surface points whose unit normal's component along the
      camera-frame 3-vector ``axis`` exceeds ``threshold`` take ``colour`` (ellipsoids and
      tubes). Hair is such a cap on a head.
    start / start_length: tubes only: ``start`` colours the first ``start_length`` pixels along
      the tube (a short sleeve, trousers below a shirt).
  """

  color: RGB
  pattern: str = 'plain'
  color2: RGB = (0., 0., 0.)
  period: float = 8.
  angle: float = 0.
  gloss: float = 0.
  cap: tuple[tuple[float, float, float], float, RGB] | None = None
  start: Material | None = None
  start_length: float = 0.

  def scaled(self, factor: float) -> Material:
    """The material with its lengths (pattern period, start length) multiplied by ``factor``."""
    start = None if self.start is None else self.start.scaled(factor)
    return dataclasses.replace(self, period=self.period * factor, start=start,
                               start_length=self.start_length * factor)

  def albedo(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-pixel RGB (n, 3) at surface coordinates u, v (n,) in pixels."""
    rgb = self._pattern(u, v)
    if self.start is not None:
      first = u < self.start_length
      rgb = np.array(rgb)
      rgb[first] = self.start.albedo(u[first], v[first])
    return rgb

  def capped(self, albedo: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``albedo`` with the cap's colour where the normal points along the cap's axis."""
    if self.cap is None:
      return albedo
    axis, threshold, color = self.cap
    covered = normal @ np.asarray(axis, np.float32) > threshold
    return np.where(covered[:, None], np.asarray(color, np.float32), albedo)

  def _pattern(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    base = np.asarray(self.color, np.float32)
    if self.pattern == 'plain':
      return np.broadcast_to(base, (u.shape[0], 3))
    ca, sa = np.cos(self.angle), np.sin(self.angle)
    a = (u * ca + v * sa) / self.period
    b = (v * ca - u * sa) / self.period
    if self.pattern == 'stripes':
      w = (np.floor(a * 2) % 2).astype(np.float32)
    elif self.pattern == 'checks':
      w = ((np.floor(a) + np.floor(b)) % 2).astype(np.float32)
    elif self.pattern == 'dots':
      w = (((a - np.round(a)) ** 2 + (b - np.round(b)) ** 2) < 0.06).astype(np.float32)
    elif self.pattern == 'noise':
      w = value_noise(a + 17.3, b + 5.1)
    else:
      raise ValueError(f'unknown pattern {self.pattern!r}')
    return base + w[:, None] * (np.asarray(self.color2, np.float32) - base)


class Canvas:
  """An RGB image with a z-buffer and an owner map.

  ``owner[i, j]`` is the id of the primitive that drew pixel (i, j), 0 for the background; every
  id belongs to a group (an instance index, or -1 for props and occluders) given at
  :meth:`new_owner`.
  """

  def __init__(self, image: np.ndarray, light: Sequence[float], ambient: float):
    self.image = np.array(image, np.float32)
    self.height, self.width = self.image.shape[:2]
    self.depth = np.full((self.height, self.width), np.inf, np.float32)
    self.owner = np.zeros((self.height, self.width), np.int32)
    # The diffuse lighting factor each pixel got, which decals drawn over it reuse.
    self.lighting = np.ones((self.height, self.width), np.float32)
    self.light = np.asarray(light, np.float32) / np.linalg.norm(light)
    self.ambient = float(ambient)
    self._groups = [-1]

  def new_owner(self, group: int) -> int:
    self._groups.append(group)
    return len(self._groups) - 1

  def group_map(self) -> np.ndarray:
    """(H, W) group of the primitive that drew each pixel; -1 for background, props, occluders."""
    return np.asarray(self._groups, np.int32)[self.owner]

  def window(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float):
    """Pixel-centre grids of the pixels whose centres lie in [x_lo, x_hi] × [y_lo, y_hi], clipped
    to the image: ``(rows slice, cols slice, xs (1, w), ys (h, 1))``, or None when empty."""
    x0 = max(0, int(np.ceil(x_lo)))
    x1 = min(self.width, int(np.floor(x_hi)) + 1)
    y0 = max(0, int(np.ceil(y_lo)))
    y1 = min(self.height, int(np.floor(y_hi)) + 1)
    if x0 >= x1 or y0 >= y1:
      return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return slice(y0, y1), slice(x0, x1), xs, ys

  def paint(self, rows: slice, cols: slice, inside: np.ndarray, z: np.ndarray, surface,
            material: Material, oid: int, decal_tol: float | None):
    """Draws the pixels of a window where ``inside`` holds and the primitive is nearest.

    ``surface(drawn)`` returns the (albedo (n, 3), unit normal (n, 3)) of the drawn pixels. A
    decal (``decal_tol`` set) writes no depth and only paints where the surface already drawn
    lies within ``decal_tol`` of its own depth, lit as that surface was: face features then
    vanish behind a hand or on the back of the head without visibility logic of their own.
    """
    depth = self.depth[rows, cols]
    if decal_tol is None:
      drawn = inside & (z < depth)
    else:
      drawn = inside & (np.abs(depth - z) <= decal_tol)
    if not drawn.any():
      return
    albedo, normal = surface(drawn)
    lighting = self.lighting[rows, cols]
    if decal_tol is None:
      depth[drawn] = z[drawn]
      lit = self.ambient + (1. - self.ambient) * np.maximum(normal @ self.light, 0.)
      lighting[drawn] = lit
    else:
      lit = lighting[drawn]
    rgb = albedo * lit[:, None]
    if material.gloss and decal_tol is None:
      # Blinn half-vector between the light and the viewer (0, 0, -1).
      half = self.light + np.asarray([0., 0., -1.], np.float32)
      half /= np.linalg.norm(half)
      rgb = rgb + material.gloss * np.clip(normal @ half, 0., 1.)[:, None] ** 24
    self.image[rows, cols][drawn] = np.minimum(rgb, 1.)
    self.owner[rows, cols][drawn] = oid


def capsule(canvas: Canvas, p0, p1, r0: float, r1: float, material: Material, oid: int, *,
            bulge: float = 1., decal_tol: float | None = None):
  """A tapered capsule between 3-D points p0, p1 (x, y, z pixels) with end radii r0, r1."""
  tube(canvas, [p0, p1], [r0, r1], material, oid, bulge=bulge, decal_tol=decal_tol)


def tube(canvas: Canvas, points, radii, material: Material, oid: int, *, bulge: float = 1.,
         closed: bool = False, decal_tol: float | None = None):
  """A chain of tapered capsules through 3-D points (n, 3) (x, y, z pixels) with radii (n,).

  Depth is the axis depth minus ``bulge`` times a round cross-section's height, so limbs read as
  cylinders both to the eye (shading across the limb) and to the z-buffer (a limb passing in
  front of another occludes it where it is nearer). Surface coordinates run along (u) and across
  (v) the chain so clothing patterns follow it. ``closed`` joins the last point to the first.
  """
  pts = np.asarray(points, np.float32)
  rad = np.asarray(radii, np.float32)
  if closed:
    pts = np.concatenate([pts, pts[:1]])
    rad = np.concatenate([rad, rad[:1]])
  lengths = np.hypot(*(pts[1:, :2] - pts[:-1, :2]).T)
  start = np.concatenate([[0.], np.cumsum(lengths)])
  # Long chains (a tyre) go in runs of a few segments: each run's window is small, where one
  # window around a whole ring would evaluate every segment at every pixel inside it.
  for first in range(0, len(pts) - 1, _RUN):
    run = slice(first, first + _RUN + 1)
    _tube_run(canvas, pts[run], rad[run], float(start[first]), material, oid, bulge, decal_tol)


def _tube_run(canvas: Canvas, pts: np.ndarray, rad: np.ndarray, u0: float, material: Material,
              oid: int, bulge: float, decal_tol: float | None):
  r_max = float(rad.max())
  lo = pts.min(axis=0) - r_max
  hi = pts.max(axis=0) + r_max
  win = canvas.window(lo[0], hi[0], lo[1], hi[1])
  if win is None:
    return
  rows, cols, xs, ys = win
  # Segments along axis 0, pixels along axes 1 and 2.
  seg = lambda a: a[:, None, None]
  x0, y0, z0, r0 = seg(pts[:-1, 0]), seg(pts[:-1, 1]), seg(pts[:-1, 2]), seg(rad[:-1])
  dx, dy = seg(pts[1:, 0] - pts[:-1, 0]), seg(pts[1:, 1] - pts[:-1, 1])
  dz, dr = seg(pts[1:, 2] - pts[:-1, 2]), seg(rad[1:] - rad[:-1])
  length2 = dx * dx + dy * dy
  # A segment seen end-on projects to a point: its pixels all take t = 0.
  t = ((xs - x0) * dx + (ys - y0) * dy) / np.maximum(length2, 1e-6)
  t = np.minimum(np.maximum(t, 0.), 1.) * (length2 > 1e-6)
  ox = xs - (x0 + t * dx)
  oy = ys - (y0 + t * dy)
  r = r0 + dr * t
  d2 = (ox * ox + oy * oy) / (r * r)
  h = np.sqrt(np.maximum(1. - d2, 0.))
  # Outside pixels get a huge finite depth: infinities would make NaNs in a decal's depth test.
  z = np.where(d2 <= 1., z0 + t * dz - bulge * h * r, _FAR)
  best = np.argmin(z, axis=0)[None]
  z = np.take_along_axis(z, best, axis=0)[0]
  inside = z < _FAR
  if not inside.any():
    return
  lengths = np.sqrt(length2[:, 0, 0])
  start = (u0 + np.concatenate([[0.], np.cumsum(lengths)[:-1]])).astype(np.float32)

  def surface(m):
    yy, xx = np.nonzero(m)
    k = best[0][m]
    rk, ok_x, ok_y = r[k, yy, xx], ox[k, yy, xx], oy[k, yy, xx]
    normal = np.stack([ok_x / rk, ok_y / rk, -h[k, yy, xx]], axis=-1)
    lk = np.maximum(lengths[k], 1e-3)
    u = start[k] + t[k, yy, xx] * lengths[k]
    v = (ok_y * dx[k, 0, 0] - ok_x * dy[k, 0, 0]) / lk
    return material.capped(material.albedo(u, v), normal), normal

  canvas.paint(rows, cols, inside, z, surface, material, oid, decal_tol)


def ellipsoid(canvas: Canvas, centre, axes, material: Material, oid: int, *,
              decal_tol: float | None = None):
  """A solid ellipsoid {centre + axes @ s : |s| <= 1}; ``axes`` (3, 3) holds its semi-axis vectors
  as columns, in camera pixels. Rendered exactly: each pixel's ray meets it in a quadratic."""
  centre = np.asarray(centre, np.float32)
  axes = np.asarray(axes, np.float32)
  extent = np.linalg.norm(axes, axis=1)
  win = canvas.window(centre[0] - extent[0], centre[0] + extent[0],
                      centre[1] - extent[1], centre[1] + extent[1])
  if win is None:
    return
  rows, cols, xs, ys = win
  inv = np.linalg.inv(axes)
  dx = xs - centre[0]
  dy = ys - centre[1]
  # Unit-sphere coordinates along the ray: s(z) = a + z·b.
  a = [inv[k, 0] * dx + inv[k, 1] * dy for k in range(3)]
  b = inv[:, 2]
  bb = float(b @ b)
  ab = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
  aa = a[0] * a[0] + a[1] * a[1] + a[2] * a[2]
  disc = ab * ab - bb * (aa - 1.)
  inside = disc >= 0.
  if not inside.any():
    return
  zr = (-ab - np.sqrt(np.clip(disc, 0., None))) / bb
  z = centre[2] + zr

  def surface(m):
    s = np.stack([a[k][m] + zr[m] * b[k] for k in range(3)], axis=-1)
    normal = s @ inv
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    radii = np.linalg.norm(axes, axis=0)
    albedo = material.albedo(s[:, 0] * radii[0], s[:, 1] * radii[1])
    return material.capped(albedo, normal), normal

  canvas.paint(rows, cols, inside, z, surface, material, oid, decal_tol)


def inside_polygon(xs: np.ndarray, ys: np.ndarray, poly: np.ndarray) -> np.ndarray:
  """Even-odd test of the points (xs (1, w), ys (h, 1)) against the polygon (n, 2) of (x, y)."""
  inside = np.zeros((ys.shape[0], xs.shape[1]), bool)
  n = len(poly)
  for k in range(n):
    xa, ya = poly[k]
    xb, yb = poly[(k + 1) % n]
    if ya == yb:
      continue
    crosses = (ya > ys) != (yb > ys)
    x_cross = xa + (ys - ya) * ((xb - xa) / (yb - ya))
    inside ^= crosses & (xs < x_cross)
  return inside


def polygon(canvas: Canvas, verts, material: Material, oid: int, *, hole=None,
            decal_tol: float | None = None):
  """A planar polygon (n, 3) in camera pixels, optionally minus a hole polygon (m, 3) in the
  same plane; double-sided. Surface coordinates are image (x, y)."""
  verts = np.asarray(verts, np.float32)
  lo = verts.min(axis=0)
  hi = verts.max(axis=0)
  win = canvas.window(lo[0], hi[0], lo[1], hi[1])
  if win is None:
    return
  rows, cols, xs, ys = win
  inside = inside_polygon(xs, ys, verts[:, :2])
  if hole is not None:
    inside &= ~inside_polygon(xs, ys, np.asarray(hole, np.float32)[:, :2])
  if not inside.any():
    return
  # Newell's normal stays well defined for any planar polygon, also nearly edge-on ones.
  nxt = np.roll(verts, -1, axis=0)
  normal = np.array([
      np.sum((verts[:, 1] - nxt[:, 1]) * (verts[:, 2] + nxt[:, 2])),
      np.sum((verts[:, 2] - nxt[:, 2]) * (verts[:, 0] + nxt[:, 0])),
      np.sum((verts[:, 0] - nxt[:, 0]) * (verts[:, 1] + nxt[:, 1])),
  ], np.float32)
  normal /= np.linalg.norm(normal) + 1e-9
  if normal[2] > 0:
    normal = -normal
  centroid = verts.mean(axis=0)
  if normal[2] < -0.05:
    z = centroid[2] - (normal[0] * (xs - centroid[0]) + normal[1] * (ys - centroid[1])) / normal[2]
  else:
    # Edge-on, the plane's depth slope is unbounded; its few pixels take the centroid's depth.
    z = np.full(inside.shape, centroid[2], np.float32)
  z = np.broadcast_to(z, inside.shape)

  def surface(m):
    yy, xx = np.nonzero(m)
    return material.albedo(xs[0, xx], ys[yy, 0]), np.broadcast_to(normal, (len(xx), 3))

  canvas.paint(rows, cols, inside, z, surface, material, oid, decal_tol)


def circle_points(centre, axis_a, axis_b, count: int = 40) -> np.ndarray:
  """(count, 3) points of the 3-D ellipse centre + cos·axis_a + sin·axis_b."""
  angles = np.linspace(0., 2. * np.pi, count, endpoint=False, dtype=np.float32)
  return (np.asarray(centre, np.float32)[None]
          + np.cos(angles)[:, None] * np.asarray(axis_a, np.float32)[None]
          + np.sin(angles)[:, None] * np.asarray(axis_b, np.float32)[None])


# ---------------------------------------------------------------------------------------------
# Backgrounds.


def random_color(rng: np.random.Generator, saturation=(0., 0.7), value=(0.15, 0.95)) -> RGB:
  """An RGB colour from uniform hue and the given saturation and value ranges."""
  h = rng.random()
  s = rng.uniform(*saturation)
  v = rng.uniform(*value)
  k = (np.array([5., 3., 1.]) + h * 6.) % 6.
  rgb = v - v * s * np.clip(np.minimum(k, 4. - k), 0., 1.)
  return tuple(float(c) for c in rgb)


def random_material(rng: np.random.Generator, color: RGB, scale: float,
                    patterns=('plain', 'plain', 'stripes', 'checks', 'noise', 'dots')) -> Material:
  """A cloth-like material of base ``color``; ``scale`` (pixels) sets the pattern's size."""
  pattern = patterns[rng.integers(len(patterns))]
  if pattern == 'plain':
    return Material(color)
  second = random_color(rng) if rng.random() < 0.6 else tuple(
      float(np.clip(c * rng.uniform(0.4, 0.75), 0, 1)) for c in color)
  return Material(color, pattern, second, period=float(scale * rng.uniform(0.5, 2.)),
                  angle=float(rng.choice([0., np.pi / 2, rng.uniform(0, np.pi)])))


def _gradient(rng, h, w, c0, c1) -> np.ndarray:
  angle = rng.uniform(0, 2 * np.pi)
  t = (np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(angle))
       + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(angle)))
  t = ((t - t.min()) / (t.max() - t.min() + 1e-6))[..., None]
  c0 = np.asarray(c0, np.float32)
  return c0 + t * (np.asarray(c1, np.float32) - c0)


def _noise_field(rng, h, w, cell: float) -> np.ndarray:
  """(h, w) smooth noise in about [0, 1] with features ``cell`` pixels apart."""
  # A coarse random grid upsampled in C by PIL: a full-resolution lattice lookup costs ten times
  # more and looks the same.
  gh, gw = int(h / cell) + 3, int(w / cell) + 3
  grid = Image.fromarray(rng.random((gh, gw), dtype=np.float32))
  size = (round(gw * cell), round(gh * cell))
  field = np.asarray(grid.resize(size, Image.BICUBIC))
  oy, ox = int(rng.integers(0, int(cell) + 1)), int(rng.integers(0, int(cell) + 1))
  return np.clip(field[oy:oy + h, ox:ox + w], 0., 1.)


def _random_shape(rng, canvas: Canvas, size: float, z: float):
  """One opaque background object: a box, an ellipse, a blob, a pole or a shaded limb-like bar."""
  h, w = canvas.height, canvas.width
  cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
  material = random_material(rng, random_color(rng), size * 0.2)
  oid = canvas.new_owner(-1)
  kind = rng.integers(5)
  if kind == 0:
    angle = rng.uniform(0, np.pi) if rng.random() < 0.4 else 0.
    half = rng.uniform(0.1, 0.6, 2) * size
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * half
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = corners @ rot.T + [cx, cy]
    polygon(canvas, np.concatenate([xy, np.full((4, 1), z)], axis=1), material, oid)
  elif kind == 1:
    radii = rng.uniform(0.05, 0.4, 3) * size
    ellipsoid(canvas, [cx, cy, z], np.diag(radii), material, oid)
  elif kind == 2:
    count = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(0.1, 0.4, count) * size
    xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    polygon(canvas, np.concatenate([xy, np.full((count, 1), z)], axis=1), material, oid)
  elif kind == 3:
    r = rng.uniform(0.02, 0.08) * size
    capsule(canvas, [cx, -r, z], [cx + rng.uniform(-0.2, 0.2) * size, h + r, z], r, r,
            material, oid)
  else:
    # Limb-like bars in skin and cloth colours keep a model from taking every shaded capsule for
    # a person.
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.2, 0.7) * size
    r = rng.uniform(0.03, 0.08) * size
    end = [cx + length * np.cos(angle), cy + length * np.sin(angle), z]
    capsule(canvas, [cx, cy, z], end, r, r * rng.uniform(0.6, 1.), material, oid)


def scene_background(rng: np.random.Generator, h: int, w: int, light, ambient: float) -> np.ndarray:
  """A cluttered indoor/outdoor-like backdrop: a gradient wall, often a floor, random objects."""
  image = _gradient(rng, h, w, random_color(rng), random_color(rng))
  if rng.random() < 0.6:
    horizon = int(rng.uniform(0.45, 0.85) * h)
    floor = _gradient(rng, h - horizon, w, random_color(rng, value=(0.1, 0.7)),
                      random_color(rng, value=(0.1, 0.7)))
    if rng.random() < 0.5:
      # Floor boards or tiles: bands whose spacing grows toward the camera.
      ys = np.arange(h - horizon, dtype=np.float32)[:, None]
      bands = (np.floor(np.sqrt(ys + 4.) * rng.uniform(1.5, 3.)) % 2)[..., None]
      floor = floor * (1. - 0.15 * bands)
    image[horizon:] = floor
  canvas = Canvas(image, light, ambient)
  size = float(min(h, w))
  count = int(rng.integers(4, 14))
  for k in range(count):
    _random_shape(rng, canvas, size * rng.uniform(0.3, 1.), z=float(count - k))
  image = canvas.image
  if rng.random() < 0.3:
    stripes = Material(random_color(rng), 'stripes', random_color(rng),
                       period=float(rng.uniform(6, 40)), angle=float(rng.uniform(0, np.pi)))
    x0, x1 = sorted(rng.integers(0, w, 2))
    if x1 > x0:
      ys, xs = np.mgrid[0:h, x0:x1].astype(np.float32)
      image[:, x0:x1] = stripes.albedo(xs.ravel(), ys.ravel()).reshape(h, x1 - x0, 3)
  shade = 0.75 + 0.5 * _noise_field(rng, h, w, rng.uniform(40, 160))
  return np.clip(image * shade[..., None], 0., 1.)


def blanket_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A soft textile seen from above: plaid, checks, dots or mottled cloth with folds."""
  base = random_color(rng, saturation=(0.05, 0.45), value=(0.55, 0.95))
  second = random_color(rng, saturation=(0.1, 0.6), value=(0.35, 0.9))
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  angle = rng.uniform(0, np.pi)
  a = xs * np.cos(angle) + ys * np.sin(angle)
  b = ys * np.cos(angle) - xs * np.sin(angle)
  period = rng.uniform(10, 50)
  kind = rng.integers(4)
  if kind == 0:
    weight = 0.5 * ((np.floor(a / period * 2) % 2) + (np.floor(b / period * 2) % 2)) * 0.7
  elif kind == 1:
    weight = ((np.floor(a / period) + np.floor(b / period)) % 2) * 0.8
  elif kind == 2:
    fa = a / period - np.round(a / period)
    fb = b / period - np.round(b / period)
    weight = ((fa * fa + fb * fb) < 0.05).astype(np.float32)
  else:
    weight = _noise_field(rng, h, w, period)
  image = (np.asarray(base, np.float32) * (1 - weight[..., None])
           + np.asarray(second, np.float32) * weight[..., None])
  # Folds: low-frequency ridges of shade across the cloth.
  folds = np.sin(_noise_field(rng, h, w, rng.uniform(60, 160)) * rng.uniform(4, 9))
  image *= (0.86 + 0.08 * folds + 0.1 * _noise_field(rng, h, w, 7.))[..., None]
  if rng.random() < 0.4:
    # A second cloth (a pillow or the mattress edge) over part of the frame.
    edge = rng.uniform(0.05, 0.3) * (w if rng.random() < 0.5 else h)
    other = random_color(rng, saturation=(0., 0.4), value=(0.5, 0.95))
    region = (xs < edge) if rng.random() < 0.5 else (ys > h - edge)
    image[region] = np.asarray(other, np.float32) * (
        0.9 + 0.1 * _noise_field(rng, h, w, 9.))[region][:, None]
  return np.clip(image, 0., 1.)


def finish(rng: np.random.Generator, image: np.ndarray, *, blur=(0.4, 0.9), gain=(0.85, 1.15),
           noise=(0.005, 0.025)) -> np.ndarray:
  """Camera-like finishing of an (H, W, 3) float image: a soft Gaussian blur (sigma U(*blur)
  pixels; anti-aliasing the hard raster edges), exposure (U(*gain)) and colour-balance jitter and
  sensor noise (standard deviation U(*noise) of full scale). Returns uint8 (H, W, 3)."""
  sigma = rng.uniform(*blur)
  out = ndimage.gaussian_filter(image, (sigma, sigma, 0), mode='nearest', truncate=2.)
  factor = rng.uniform(*gain) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
  out = out * factor
  out = out + rng.uniform(*noise) * rng.standard_normal(out.shape, dtype=np.float32)
  return (np.clip(out, 0., 1.) * 255. + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Mask outlines.


def mask_outlines(mask: np.ndarray, *, tolerance: float = 0.6) -> list[np.ndarray]:
  """Outer outlines of a binary mask's 4-connected components, as (n, 2) arrays of (x, y).

  Outlines run along pixel edges (half-integer coordinates under the pixel-centre convention), so
  rasterising them with pycocotools gives back the mask, holes filled, up to the Douglas-Peucker
  ``tolerance`` (pixels).
  """
  boxes = ndimage.find_objects(mask.astype(np.int32))
  if not boxes:
    return []
  crop = boxes[0]
  labels, _ = ndimage.label(ndimage.binary_fill_holes(mask[crop]))
  outlines = []
  for k, box in enumerate(ndimage.find_objects(labels), start=1):
    if box is None:
      continue
    component = labels[box] == k
    padded = np.pad(component, 1)
    row0, col0 = box[0].start + crop[0].start, box[1].start + crop[1].start
    for loop in _trace_edges(padded):
      # Corner (r, c) of the padded grid is the top-left corner of padded pixel (r, c).
      xy = np.stack([loop[:, 1] - 1.5 + col0, loop[:, 0] - 1.5 + row0], axis=1)
      simple = _simplify_closed(xy, tolerance)
      outlines.append(simple if len(simple) >= 3 else xy)
  return outlines


def _trace_edges(mask: np.ndarray) -> list[np.ndarray]:
  """Closed loops of pixel-edge corners (row, col) around a padded mask, inside on the right."""
  up = np.zeros_like(mask)
  up[1:] = mask[:-1]
  down = np.zeros_like(mask)
  down[:-1] = mask[1:]
  left = np.zeros_like(mask)
  left[:, 1:] = mask[:, :-1]
  right = np.zeros_like(mask)
  right[:, :-1] = mask[:, 1:]
  starts, ends = [], []
  for exposed, start, end in (
      (mask & ~up, (0, 0), (0, 1)),      # top edge, walking +x
      (mask & ~right, (0, 1), (1, 1)),   # right edge, walking +y
      (mask & ~down, (1, 1), (1, 0)),    # bottom edge, walking -x
      (mask & ~left, (1, 0), (0, 0)),    # left edge, walking -y
  ):
    r, c = np.nonzero(exposed)
    starts.append(np.stack([r + start[0], c + start[1]], axis=1))
    ends.append(np.stack([r + end[0], c + end[1]], axis=1))
  starts = np.concatenate(starts)
  ends = np.concatenate(ends)
  width = mask.shape[1] + 1
  start_code = (starts[:, 0] * width + starts[:, 1]).tolist()
  end_code = (ends[:, 0] * width + ends[:, 1]).tolist()
  outgoing: dict[int, list[int]] = {}
  for e, s in enumerate(start_code):
    outgoing.setdefault(s, []).append(e)
  used = [False] * len(start_code)
  loops = []
  for first in range(len(start_code)):
    if used[first]:
      continue
    loop = []
    e = first
    while not used[e]:
      used[e] = True
      loop.append(e)
      options = [o for o in outgoing[end_code[e]] if not used[o]]
      if not options:
        break
      if len(options) > 1:
        # A pinch corner (two pixels touching diagonally): turn right, keeping the loop simple.
        heading = ends[e] - starts[e]
        turn_right = np.array([heading[1], -heading[0]])
        options.sort(key=lambda o: -int(np.dot(ends[o] - starts[o], turn_right)))
      e = options[0]
    corners = starts[loop]
    heading = np.diff(np.concatenate([corners, corners[:1]]), axis=0)
    turning = np.any(heading != np.roll(heading, 1, axis=0), axis=1)
    loops.append(corners[turning].astype(np.float32))
  return loops


def _simplify_closed(points: np.ndarray, tolerance: float) -> np.ndarray:
  """Douglas-Peucker on a closed polyline, split at its first point and the point farthest away."""
  if len(points) < 4:
    return points
  far = int(np.argmax(np.sum((points - points[0]) ** 2, axis=1)))
  first = _simplify_open(points[:far + 1], tolerance)
  second = _simplify_open(np.concatenate([points[far:], points[:1]]), tolerance)
  return np.concatenate([first[:-1], second[:-1]])


def _simplify_open(points: np.ndarray, tolerance: float) -> np.ndarray:
  keep = np.zeros(len(points), bool)
  keep[0] = keep[-1] = True
  stack = [(0, len(points) - 1)]
  while stack:
    i, j = stack.pop()
    if j <= i + 1:
      continue
    a, b = points[i], points[j]
    seg = b - a
    rel = points[i + 1:j] - a
    norm = np.hypot(*seg)
    if norm < 1e-9:
      dist = np.hypot(rel[:, 0], rel[:, 1])
    else:
      dist = np.abs(rel[:, 0] * seg[1] - rel[:, 1] * seg[0]) / norm
    k = int(np.argmax(dist))
    if dist[k] > tolerance:
      m = i + 1 + k
      keep[m] = True
      stack.extend(((i, m), (m, j)))
  return points[keep]
