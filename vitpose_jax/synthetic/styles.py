"""Rendering styles as data: the lighting, camera, textures and sensor any population is drawn with.

A :class:`Style` record holds numbers only; the generator calls its methods at fixed points of a
scene and has no branch on a style's name. A field left at its default keeps what the scene drew,
so ``plain`` (every field at its default) is the generator's own look, byte for byte, and
``shifted`` is a domain shift for adaptation experiments.

A style draws from its own random stream (:func:`style_rng`), never from the scene's, so for a
given (population, seed, split, index) the people, poses, views and layout are the same draws in
every style. The scene's retry when someone is too hidden to label depends on what was drawn,
so an image a style makes harder to label may be redrawn, and differ from there on.

The renderer is orthographic, so the camera fields change what an orthographic camera can: the
viewing direction (``tilt``, a camera higher above upright people or beside a lying infant, which
foreshortens the body) and the framing (``zoom``, smaller people in a wider frame); there is no
perspective.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vitpose_jax.synthetic import render
from vitpose_jax.synthetic.body import Outfit, pick, rx
from vitpose_jax.synthetic.render import RGB, Material

Range = tuple[float, float]

# The quality the plain style writes JPEGs with.
JPEG_QUALITY = 90

_PATTERNS = ('stripes', 'checks', 'dots', 'noise')
# ITU-R BT.601 luma weights: what a monochrome sensor mode records.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class Style:
  """One rendering style.

  Attributes:
    name: what specs and the command line call it.
    stream: the key of the style's own random stream (:func:`style_rng`); unique among styles.
    light_x, light_y: ranges of the light direction's image x (either side, equal odds) and y
      (positive from below) in the camera frame, with z = -1 (the light on the camera's side);
      None keeps the scene's light.
    ambient: range of the ambient light fraction (0 black shadows, 1 flat); None keeps the scene's.
    tints: white-balance gains per channel, one picked per image; empty for none.
    exposure: range of an overall gain; None for none.
    monochrome: probability that an image is recorded in grey (a night-vision camera mode).
    tilt: degrees (U(lo, hi)) the camera turns about the image's horizontal axis, positive
      looking further down on an upright person; foreshortens the body along the image's y.
    zoom: range of a factor on every person's size in the frame (one per image).
    cloth_patterns: patterns shirts and trousers are re-textured with (skin is kept); empty keeps
      the outfit's.
    cloth_period: range of the re-textured pattern's period, body units.
    backdrop_patterns: patterns laid over the backdrop; empty for none.
    backdrop_period: range of that pattern's period, pixels.
    backdrop_mix: range of the overlay's opacity.
    blur, gain, noise: the sensor (:func:`vitpose_jax.synthetic.render.finish`): ranges of the
      blur's Gaussian sigma (pixels), the exposure jitter and the noise's standard deviation
      (fraction of full scale); None keeps the scene's own finishing draws.
    jpeg_quality: the quality JPEGs are written with (1-95).
  """

  name: str
  stream: int
  light_x: Range | None = None
  light_y: Range | None = None
  ambient: Range | None = None
  tints: tuple[RGB, ...] = ()
  exposure: Range | None = None
  monochrome: float = 0.
  tilt: Range | None = None
  zoom: Range | None = None
  cloth_patterns: tuple[str, ...] = ()
  cloth_period: Range = (0.01, 0.02)
  backdrop_patterns: tuple[str, ...] = ()
  backdrop_period: Range = (3., 8.)
  backdrop_mix: Range = (0.3, 0.5)
  blur: Range | None = None
  gain: Range | None = None
  noise: Range | None = None
  jpeg_quality: int = JPEG_QUALITY

  def __post_init__(self):
    unknown = [p for p in (*self.cloth_patterns, *self.backdrop_patterns) if p not in _PATTERNS]
    if unknown:
      raise ValueError(f'style {self.name!r}: patterns {unknown} are not some of '
                       f'{", ".join(_PATTERNS)}')
    if (self.light_x is None) != (self.light_y is None):
      raise ValueError(f'style {self.name!r}: light_x and light_y are set together')
    if (self.blur is None) != (self.gain is None) or (self.blur is None) != (self.noise is None):
      raise ValueError(f'style {self.name!r}: blur, gain and noise are set together')
    if not 0. <= self.monochrome <= 1.:
      raise ValueError(f'style {self.name!r}: monochrome {self.monochrome!r} is not a '
                       'probability')
    if not 1 <= self.jpeg_quality <= 95:
      raise ValueError(f'style {self.name!r}: jpeg_quality {self.jpeg_quality!r} is not in 1-95')

  def lighting(self, rng: np.random.Generator, light: tuple[float, float, float],
               ambient: float) -> tuple[tuple[float, float, float], float]:
    """The scene's (light direction, ambient fraction), or the style's own draws."""
    if self.light_x is not None:
      light = (pick(rng, (-1., 1.)) * rng.uniform(*self.light_x), rng.uniform(*self.light_y),
               -1.)
    if self.ambient is not None:
      ambient = rng.uniform(*self.ambient)
    return light, ambient

  def backdrop(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float backdrop with the style's pattern laid over it."""
    if not self.backdrop_patterns:
      return image
    h, w = image.shape[:2]
    texture = Material(render.random_color(rng), pick(rng, self.backdrop_patterns),
                       render.random_color(rng), period=float(rng.uniform(*self.backdrop_period)),
                       angle=float(rng.uniform(0., np.pi)))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    overlay = texture.albedo(xs.ravel(), ys.ravel()).reshape(h, w, 3)
    mix = np.float32(rng.uniform(*self.backdrop_mix))
    return image * (1. - mix) + overlay * mix

  def outfit(self, rng: np.random.Generator, outfit: Outfit) -> Outfit:
    """``outfit`` with its shirt and trousers re-textured; skin is kept, also where a bare torso
    wears it as its shirt, and one material worn as both (a onesie) stays one."""
    if not self.cloth_patterns:
      return outfit
    new: dict[Material, Material] = {outfit.skin: outfit.skin}
    for field in ('shirt', 'pants'):
      material = getattr(outfit, field)
      if material not in new:
        new[material] = Material(
            material.color, pick(rng, self.cloth_patterns),
            render.random_color(rng, saturation=(0.5, 1.), value=(0.15, 0.6)),
            period=float(rng.uniform(*self.cloth_period)), angle=float(rng.uniform(0., np.pi)),
            gloss=material.gloss)
    return dataclasses.replace(outfit, shirt=new[outfit.shirt], pants=new[outfit.pants])

  def view(self, rng: np.random.Generator, view: np.ndarray) -> np.ndarray:
    """The camera-from-body rotation ``view`` (3, 3), turned by the style's tilt."""
    if self.tilt is None:
      return view
    return rx(rng.uniform(*self.tilt)) @ view

  def size(self, rng: np.random.Generator) -> float:
    """The factor on the people's size in this image."""
    return 1. if self.zoom is None else float(rng.uniform(*self.zoom))

  def finish(self, scene_rng: np.random.Generator, rng: np.random.Generator,
             image: np.ndarray) -> np.ndarray:
    """The rendered (H, W, 3) float image as the camera records it, uint8 (H, W, 3): colour cast,
    exposure and grey mode from ``rng``, then the sensor, from the scene's ``scene_rng`` as
    the generator always did or, with the style's own sensor, from ``rng``."""
    if self.tints:
      image = image * np.asarray(pick(rng, self.tints), np.float32)
    if self.exposure is not None:
      image = image * np.float32(rng.uniform(*self.exposure))
    if self.monochrome and rng.random() < self.monochrome:
      image = np.repeat((np.clip(image, 0., 1.) @ _LUMA)[..., None], 3, axis=-1)
    if self.blur is None:
      return render.finish(scene_rng, image)
    return render.finish(rng, image, blur=self.blur, gain=self.gain, noise=self.noise)


PLAIN = Style(name='plain', stream=0)

# A dim, warm-lit or night-vision nursery camera, mounted off to the side: each number moves a
# statistic the plain generator holds in a narrow band to outside that band.
SHIFTED = Style(
    name='shifted', stream=1,
    # Light from one side and from below (plain: a frontal key light from above), so shading no
    # longer reads as "up"; ambient below plain's 0.35-0.6 leaves darker shadow sides, but not
    # so dark that a limb in shadow becomes a silhouette.
    light_x=(0.6, 1.5), light_y=(0., 0.6), ambient=(0.25, 0.35),
    # Tungsten night light (warm), fluorescent (green) and a cold LED: plain's white balance
    # varies by at most 7% per channel.
    tints=((1.0, 0.78, 0.52), (0.85, 1.0, 0.8), (0.8, 0.9, 1.1)),
    # Underexposed, as a room at night is.
    exposure=(0.65, 0.9),
    # A third of frames grey, as baby monitors record in their infrared mode.
    monochrome=0.33,
    # 25-45 degrees further down (plain: within 15 degrees of straight at the person): a camera on
    # a shelf above an adult, or beside a cot rather than above it, foreshortens the body.
    tilt=(25., 45.),
    # People at 55-80% of the size plain frames them at: a wide-angle monitor's view.
    zoom=(0.55, 0.8),
    # Busy, high-contrast fabric on every garment (plain: half the clothes plain-coloured, periods
    # 0.02-0.08 body units), fine, but not so fine that the blur below erases it; and a fine
    # pattern over the backdrop, which plain never has.
    cloth_patterns=('stripes', 'checks', 'noise'), cloth_period=(0.015, 0.035),
    backdrop_patterns=('stripes', 'checks', 'noise'), backdrop_period=(3., 8.),
    backdrop_mix=(0.25, 0.5),
    # A cheap sensor: defocus above plain's sigma 0.4-0.9, noise several times plain's
    # 0.005-0.025, and a streaming camera's heavy JPEG compression (plain writes quality 90).
    blur=(1.1, 2.0), gain=(0.85, 1.15), noise=(0.04, 0.08), jpeg_quality=40,
)

STYLES: dict[str, Style] = {}


def register(style: Style) -> Style:
  """Adds ``style`` to ``STYLES``; ValueError if its name or stream is taken.

  The data cache knows a style by its name: a changed record needs a new name, or its old data
  would be served.
  """
  if style.name in STYLES:
    raise ValueError(f'style {style.name!r} is already registered')
  taken = {s.stream: s.name for s in STYLES.values()}
  if style.stream in taken:
    raise ValueError(f'style {style.name!r}: stream {style.stream} is {taken[style.stream]!r}\'s')
  STYLES[style.name] = style
  return style


def get(style: str | Style) -> Style:
  """The registered style of that name (a record is returned as it is); ValueError naming the
  known ones for another name."""
  if isinstance(style, Style):
    return style
  if style not in STYLES:
    raise ValueError(f'unknown style {style!r}; choose from {", ".join(STYLES)}')
  return STYLES[style]


def style_rng(scene: np.random.Generator, style: Style) -> np.random.Generator:
  """The style's own random stream for a scene: a child of the scene generator's seed sequence
  keyed by ``style.stream``, made without drawing from ``scene``. ValueError if ``scene`` was
  not seeded from a seed sequence."""
  seq = scene.bit_generator.seed_seq
  if not isinstance(seq, np.random.SeedSequence):
    raise ValueError('a style needs a scene generator seeded from a seed sequence')
  return np.random.default_rng(np.random.SeedSequence(
      seq.entropy, spawn_key=(*seq.spawn_key, style.stream), pool_size=seq.pool_size))


for _style in (PLAIN, SHIFTED):
  register(_style)
