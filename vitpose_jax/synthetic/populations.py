"""Populations as data: who is drawn, how, and which keypoint schema labels them.

A :class:`Population` record names its building blocks (a pose sampler from
``poses.POSES``, a clothing style from ``body.OUTFITS``, furniture from ``props.FURNITURE``, a
backdrop from ``props.BACKGROUNDS``, occluders from ``props.OCCLUDERS``) and holds the numbers
(body proportions, views, crowding, framing). A new population is a new record passed to
:func:`register`; the generator has no branch on a population's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vitpose_jax.synthetic.body import OUTFITS, Build
from vitpose_jax.synthetic.poses import POSES
from vitpose_jax.synthetic.props import BACKGROUNDS, FURNITURE, OCCLUDERS
from vitpose_jax.synthetic.views import FromAbove, Upright, Yaw


@dataclasses.dataclass(frozen=True)
class Population:
  """One population of the generator.

  Attributes:
    name: what specs and the command line call it.
    schema: the built-in keypoint schema its annotations label (``vitpose_jax.skeletons``).
    stream: part of every image's random key; unique among populations and never changed, since
      changing it changes every image (and so needs a new generator version).
    build: the typical person's proportions; each person varies around them.
    pose: a ``poses.POSES`` sampler.
    outfit: a ``body.OUTFITS`` clothing style.
    view: how a person is seen (``views.Upright`` or ``views.FromAbove``).
    furniture: pose kind → ``props.FURNITURE`` builder, for the poses that need one.
    background: a ``props.BACKGROUNDS`` backdrop.
    crowd: probability that an image holds two or three people rather than one.
    size_alone, size_crowd: a person's size as a fraction of the largest the frame fits, drawn
      from U(lo, hi), alone in the image or with others.
    close_up: probability that a person alone is framed close instead: the head in the upper
      frame, the legs often cut.
    occluder: probability that something stands in front of each person.
    occluders: the ``props.OCCLUDERS`` kinds it may be.
  """

  name: str
  schema: str
  stream: int
  build: Build
  pose: str
  outfit: str
  view: Upright | FromAbove
  furniture: Mapping[str, str]
  background: str
  crowd: float
  size_alone: tuple[float, float]
  size_crowd: tuple[float, float]
  occluder: float
  occluders: tuple[str, ...]
  close_up: float = 0.

  def __post_init__(self):
    for field, value, known in (('pose', self.pose, POSES), ('outfit', self.outfit, OUTFITS),
                                ('background', self.background, BACKGROUNDS)):
      if value not in known:
        raise ValueError(f'population {self.name!r}: {field} {value!r} is not one of '
                         f'{", ".join(known)}')
    for kind, builder in self.furniture.items():
      if builder not in FURNITURE:
        raise ValueError(f'population {self.name!r}: furniture for {kind!r}, {builder!r}, is '
                         f'not one of {", ".join(FURNITURE)}')
    unknown = [k for k in self.occluders if k not in OCCLUDERS]
    if unknown or not self.occluders:
      raise ValueError(f'population {self.name!r}: occluders {list(self.occluders)} must be '
                       f'some of {", ".join(OCCLUDERS)}')
    for field in ('crowd', 'occluder', 'close_up'):
      if not 0. <= getattr(self, field) <= 1.:
        raise ValueError(f'population {self.name!r}: {field} {getattr(self, field)!r} is not a '
                         'probability')


ADULT = Build(
    head=0.046, neck=0.045, trunk=0.30, shoulder=0.105, shoulder_drop=0.035, hip=0.055,
    hip_drop=0.03, upper_arm=0.186, forearm=0.146, hand=0.108, thigh=0.245, shank=0.246,
    foot=0.152, ankle=0.039, r_upper_arm=(0.031, 0.023), r_forearm=(0.023, 0.017),
    r_thigh=(0.058, 0.036), r_shank=(0.039, 0.022), r_neck=0.024, r_shoulder=0.032, r_foot=0.026,
    pelvis_width=0.085, chest_width=0.09, depth_ratio=0.62, face_shift=0., face_scale=1.,
    chin=0.64, faint_brows=False,
)
INFANT = Build(
    head=0.098, neck=0.01, trunk=0.29, shoulder=0.095, shoulder_drop=0.03, hip=0.058,
    hip_drop=0.03, upper_arm=0.11, forearm=0.09, hand=0.07, thigh=0.15, shank=0.135,
    foot=0.12, ankle=0.03, r_upper_arm=(0.045, 0.036), r_forearm=(0.037, 0.03),
    r_thigh=(0.07, 0.052), r_shank=(0.05, 0.034), r_neck=0.045, r_shoulder=0.048, r_foot=0.032,
    pelvis_width=0.11, chest_width=0.12, depth_ratio=0.8, face_shift=0.25, face_scale=0.85,
    chin=0.76, faint_brows=True,
)

# Mostly from the front, a quarter from behind, the rest in profile.
STANDING_VIEW = Upright(bands=((0.6, Yaw(-40., 40.)), (0.85, Yaw(-40., 40., centre=180.)),
                               (1., Yaw(55., 125., mirrored=True))), elevation=(-8., 15.))
STREET_OCCLUDERS = ('box', 'blob', 'pole', 'bag')

# Lying on a blanket, seen from above (MINI-RGBD-like): a supine infant faces the camera, a
# prone one shows its back.
INFANT_LYING = Population(
    name='infant', schema='infant_smil25', stream=2, build=INFANT, pose='lying', outfit='baby',
    view=FromAbove(yaw={'supine': 0., 'prone': 180., 'side': Yaw(40., 80., mirrored=True)}),
    furniture={}, background='blanket', crowd=0.1, size_alone=(0.6, 1.), size_crowd=(0.4, 0.65),
    occluder=0.12, occluders=('toy', 'blanket'))

_BUILTIN = (
    Population(
        name='adult', schema='coco17', stream=0, build=ADULT, pose='everyday',
        outfit='everyday', view=STANDING_VIEW, furniture={'sit': 'stool'}, background='room',
        crowd=0.3, size_alone=(0.45, 0.95), size_crowd=(0.35, 0.8), occluder=0.2,
        occluders=STREET_OCCLUDERS),
    # Framed larger than 'adult' and often close up, as most COCO-WholeBody faces and hands are.
    Population(
        name='adult_wholebody', schema='coco_wholebody133', stream=1, build=ADULT,
        pose='everyday', outfit='everyday', view=STANDING_VIEW, furniture={'sit': 'stool'},
        background='room', crowd=0.15, size_alone=(0.6, 1.), size_crowd=(0.45, 0.9),
        close_up=0.5, occluder=0.2, occluders=STREET_OCCLUDERS),
    INFANT_LYING,
    # Seen from any side half of the time, and from a little above.
    Population(
        name='wheelchair', schema='wheelchair23', stream=3, build=ADULT, pose='seated',
        outfit='everyday', view=Upright(bands=((0.5, Yaw(-180., 180.)), (1., Yaw(-50., 50.))),
                                        elevation=(0., 25.)),
        furniture={'seated': 'wheelchair'}, background='room', crowd=0.2,
        size_alone=(0.45, 0.95), size_crowd=(0.35, 0.8), occluder=0.2,
        occluders=STREET_OCCLUDERS),
    # Infants drawn as above but labelled as SyRIP labels infants, with COCO's 17 body points,
    # so that a model of COCO-labelled adults is scored on them in its own schema.
    dataclasses.replace(INFANT_LYING, name='infant_coco', schema='coco17', stream=4),
)

POPULATIONS: dict[str, Population] = {}


def register(population: Population) -> Population:
  """Adds ``population`` to ``POPULATIONS``; ValueError if its name or stream is taken.

  The data cache knows a population by its name (and the generator version): a changed record
  needs a new name, or its old data would be served.
  """
  if population.name in POPULATIONS:
    raise ValueError(f'population {population.name!r} is already registered')
  taken = {p.stream: p.name for p in POPULATIONS.values()}
  if population.stream in taken:
    raise ValueError(f'population {population.name!r}: stream {population.stream} is '
                     f"{taken[population.stream]!r}'s")
  POPULATIONS[population.name] = population
  return population


def get(population: str | Population) -> Population:
  """The registered population of that name (a record is returned as it is)."""
  if isinstance(population, Population):
    return population
  if population not in POPULATIONS:
    raise ValueError(f'unknown population {population!r}; choose from {", ".join(POPULATIONS)}')
  return POPULATIONS[population]


for _population in _BUILTIN:
  register(_population)
