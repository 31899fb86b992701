"""Viewpoints as data: how a population is seen, drawn per person.

A view is the camera-from-body rotation: body (left, up, forward) → camera (x right, y down,
z away from the camera). :class:`Upright` sees a person from around eye level, :class:`FromAbove`
looks down on a person lying on the floor, with the yaw set by how they lie.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from vitpose_jax.synthetic.body import pick, rx, ry, rz

_FLIP = np.diag([1., -1., -1.])


@dataclasses.dataclass(frozen=True)
class Yaw:
  """One band of headings (degrees; 0 faces the camera, positive turns to the person's left):
  ``centre`` + U(lo, hi), or with ``mirrored`` ±U(lo, hi), either side with equal odds."""

  lo: float
  hi: float
  centre: float = 0.
  mirrored: bool = False

  def sample(self, rng: np.random.Generator) -> float:
    if self.mirrored:
      return pick(rng, (-1., 1.)) * rng.uniform(self.lo, self.hi)
    return self.centre + rng.uniform(self.lo, self.hi)


@dataclasses.dataclass(frozen=True)
class Upright:
  """Seen from around eye level: a heading band (``bands``: (upto, yaw), with cumulative
  probabilities ``upto`` rising to 1), an elevation (degrees, positive looks down on the person)
  and a small roll."""

  bands: tuple[tuple[float, Yaw], ...]
  elevation: tuple[float, float]
  roll: tuple[float, float] = (-8., 8.)

  def sample(self, rng: np.random.Generator, kind: str) -> np.ndarray:
    del kind  # an upright person is seen the same way whatever they do
    r = rng.random()
    band = next((yaw for upto, yaw in self.bands if r < upto), self.bands[-1][1])
    yaw = band.sample(rng)
    elevation = rng.uniform(*self.elevation)
    roll = rng.uniform(*self.roll)
    return rz(roll) @ _FLIP @ rx(elevation) @ ry(yaw)


@dataclasses.dataclass(frozen=True)
class FromAbove:
  """Looking down on a person lying on the floor: the heading by how they lie (``yaw``: pose
  kind → a fixed heading or a band) plus U(-jitter, jitter); the image roll N(0, roll_sd) with
  probability ``roll_p``, else any; a small elevation."""

  yaw: Mapping[str, float | Yaw]
  jitter: float = 20.
  roll_sd: float = 35.
  roll_p: float = 0.75
  elevation: tuple[float, float] = (-15., 15.)

  def sample(self, rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind not in self.yaw:
      raise ValueError(f'view from above: no heading for pose kind {kind!r}; '
                       f'known: {", ".join(self.yaw)}')
    # Every band is drawn, in order, whatever the kind: the random stream stays the one the
    # generator's version was pinned with.
    headings = {k: v.sample(rng) if isinstance(v, Yaw) else v for k, v in self.yaw.items()}
    yaw = headings[kind]
    yaw += rng.uniform(-self.jitter, self.jitter)
    roll = rng.normal(0., self.roll_sd) if rng.random() < self.roll_p else rng.uniform(-180, 180)
    elevation = rng.uniform(*self.elevation)
    return rz(roll) @ _FLIP @ rx(elevation) @ ry(yaw)
