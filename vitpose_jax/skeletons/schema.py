"""The keypoint schema record: a keypoint set described entirely by data (docs/design.md).

A schema says what a model's head predicts and how every other part of the codebase treats
those keypoints: flip pairs for augmentation and flip testing, OKS sigmas for evaluation, links
and colours for drawing, joint weights for the loss, the upper/lower body split for half-body
augmentation, part slices for per-part metrics and the head segment for PCKh. No code branches
on a schema's name; everything it needs is here.

Keypoint indices are positions in ``keypoints`` (0-based). Links and the head segment are stored by
name so they survive reordering; flip pairs are stored as index pairs because the flip permutation
is what augmentation and flip testing apply.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Color = tuple[int, int, int]

# mmpose's palette: the convention pose researchers read drawings with.
LEFT_COLOR: Color = (0, 255, 0)
RIGHT_COLOR: Color = (255, 128, 0)
CENTRE_COLOR: Color = (51, 153, 255)

# Name tokens that put a keypoint in the lower body for half-body augmentation when a schema does
# not list its split explicitly.
_LOWER_BODY_TOKENS = frozenset(
    {'pelvis', 'hip', 'thigh', 'knee', 'calf', 'ankle', 'heel', 'toe', 'toes', 'foot', 'feet',
     'footrest', 'wheel', 'back', 'tail'}
)


class SchemaError(ValueError):
  """A keypoint schema is malformed. The message names the schema and the problem."""


class SchemaWarning(UserWarning):
  """A schema that loads but probably does not do what its author meant; the message says why."""


# A name's words: runs of capitals before a capitalised word (the 'L' of 'LShoulder'), capitalised
# or lower-case words (camelCase splits), digit runs, and runs of other letters (non-ASCII names).
_WORD = re.compile(r'[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[^\W\d_]+')
_SIDE_WORDS = {'left': 'left', 'l': 'left', 'right': 'right', 'r': 'right'}


def name_words(name: str) -> tuple[str, ...]:
  """A keypoint name's words in lower case, split at spaces, punctuation, camelCase and digits.

  ``'Right Shoulder'``, ``'Right-shoulder'``, ``'RightShoulder'`` and ``'right_shoulder'`` all give
  ``('right', 'shoulder')``; ``'LShoulder'`` gives ``('l', 'shoulder')``, ``'face-0'`` ``('face',
  '0')``.
  """
  return tuple(w.lower() for w in _WORD.findall(name))


def split_side(name: str) -> tuple[str | None, tuple[str, ...]]:
  """(side, the other words) of a keypoint name; side is ``'left'``, ``'right'`` or None.

  The conventions in published schemas: a first or last word ``left``/``right`` or its initial
  (``left_eye``, ``LShoulder``, ``l_shoulder``, ``shoulder_L``, ``LeftShoulder``, ``R_F_Paw``), or
  the whole word anywhere (``face_left_cheek``). A single letter only counts at either end, where
  these conventions put it, so ``l`` inside a name is left alone.
  """
  words = name_words(name)
  for i in (0, len(words) - 1):
    if words and words[i] in _SIDE_WORDS:
      return _SIDE_WORDS[words[i]], words[:i] + words[i + 1:]
  for i, w in enumerate(words):
    if w in ('left', 'right'):
      return w, words[:i] + words[i + 1:]
  return None, words


def derive_flip_pairs(keypoints: Sequence[str]) -> tuple[tuple[int, int], ...]:
  """Index pairs (left, right) of keypoints whose names differ only by their side marker.

  Sides as :func:`split_side` reads them, so ``left_eye``/``right_eye``, ``LEye``/``REye``,
  ``l_eye``/``r_eye``, ``eye_L``/``eye_R`` and ``LeftEye``/``RightEye`` pair (and ``L_Eye`` with
  ``right_eye``: the words decide, not the spelling). Pairs are in the order of their left names.
  A side whose other words several names share (``LEye`` and ``l_eye``) is ambiguous and left
  unpaired; :func:`unpaired_side_names` lists what stays unpaired.
  """
  by_key = collections.defaultdict(list)
  for i, name in enumerate(keypoints):
    by_key[split_side(name)].append(i)
  pairs = []
  for (side, rest), lefts in by_key.items():
    rights = by_key.get(('right', rest), [])
    if side == 'left' and len(lefts) == 1 and len(rights) == 1:
      pairs.append((lefts[0], rights[0]))
  return tuple(sorted(pairs))


def unpaired_side_names(keypoints: Sequence[str],
                        flip_pairs: Iterable[tuple[int, int]]) -> tuple[str, ...]:
  """The names that carry a side marker (:func:`split_side`) but are in no flip pair."""
  paired = {i for pair in flip_pairs for i in pair}
  return tuple(n for i, n in enumerate(keypoints)
               if i not in paired and split_side(n)[0] is not None)


def derive_body_split(keypoints: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(upper ids, lower ids) by name tokens: hips, legs, feet, wheels and tails are lower."""
  lower = tuple(i for i, n in enumerate(keypoints) if _LOWER_BODY_TOKENS & set(name_words(n)))
  upper = tuple(i for i in range(len(keypoints)) if i not in set(lower))
  return upper, lower


def derive_keypoint_colors(keypoints: Sequence[str]) -> tuple[Color, ...]:
  side_color = {'left': LEFT_COLOR, 'right': RIGHT_COLOR, None: CENTRE_COLOR}
  return tuple(side_color[split_side(n)[0]] for n in keypoints)


def derive_link_colors(links: Sequence[tuple[str, str]]) -> tuple[Color, ...]:
  colors = []
  for a, b in links:
    side = split_side(a)[0] if split_side(a)[0] == split_side(b)[0] else None
    colors.append({'left': LEFT_COLOR, 'right': RIGHT_COLOR, None: CENTRE_COLOR}[side])
  return tuple(colors)


@dataclasses.dataclass(frozen=True)
class Schema:
  """One keypoint schema. Construct with :func:`make_schema` (fills derivable fields) or directly.

  Attributes:
    name: registry name, e.g. ``coco17``.
    keypoints: K keypoint names in the order heads predict them.
    sigmas: K OKS sigmas (COCO's per-keypoint constants, not variances).
    flip_pairs: index pairs swapped by a horizontal flip; each index appears at most once.
    links: pairs of keypoint names drawn as limbs.
    joint_weights: K per-keypoint loss weights.
    upper_body_ids / lower_body_ids: the half-body augmentation split.
    keypoint_colors / link_colors: RGB 0-255, one per keypoint / per link.
    parts: (part name, start, stop) slices of the keypoint list, e.g. WholeBody's face 23-91.
    head_segment: two keypoint names whose distance normalises PCKh, or None.
    source_names: the keypoint names in the source dataset's own vocabulary, when they differ.
    sigma_note: where the sigmas come from.
  """

  name: str
  keypoints: tuple[str, ...]
  sigmas: tuple[float, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  links: tuple[tuple[str, str], ...]
  joint_weights: tuple[float, ...]
  upper_body_ids: tuple[int, ...]
  lower_body_ids: tuple[int, ...]
  keypoint_colors: tuple[Color, ...]
  link_colors: tuple[Color, ...]
  parts: tuple[tuple[str, int, int], ...] = ()
  head_segment: tuple[str, str] | None = None
  source_names: tuple[str, ...] | None = None
  sigma_note: str = ''

  def __post_init__(self):
    self._validate()

  def _fail(self, problem: str):
    raise SchemaError(f'schema {self.name!r}: {problem}')

  def _validate(self):
    if not isinstance(self.name, str) or not self.name:
      raise SchemaError(f'schema {self.name!r}: name must be a non-empty string')
    k = len(self.keypoints)
    if k == 0:
      self._fail('has no keypoints')
    seen = {}
    for i, n in enumerate(self.keypoints):
      if not isinstance(n, str) or not n:
        self._fail(f'keypoint {i} has an empty or non-string name {n!r}')
      if n in seen:
        self._fail(f'duplicate keypoint name {n!r} at indices {seen[n]} and {i}')
      seen[n] = i
    for field in ('sigmas', 'joint_weights', 'keypoint_colors'):
      count = len(getattr(self, field))
      if count != k:
        self._fail(f'{count} {field} for {k} keypoints')
    for i, s in enumerate(self.sigmas):
      if not s > 0:
        self._fail(f'sigma {i} ({self.keypoints[i]!r}) must be positive, got {s}')
    partner = {}
    for a, b in self.flip_pairs:
      for idx in (a, b):
        if not (isinstance(idx, int) and 0 <= idx < k):
          self._fail(f'flip pair ({a}, {b}) is out of range for {k} keypoints')
      if a == b:
        self._fail(f'flip pair ({a}, {b}) pairs a keypoint with itself')
      for x, y in ((a, b), (b, a)):
        if partner.get(x, y) != y:
          self._fail(
              f'flip pairs are not symmetric: keypoint {x} ({self.keypoints[x]!r}) is paired with '
              f'both {partner[x]} ({self.keypoints[partner[x]]!r}) and {y} ({self.keypoints[y]!r})'
          )
        partner[x] = y
    for a, b in self.links:
      for n in (a, b):
        if n not in seen:
          self._fail(f'link ({a!r}, {b!r}) names unknown keypoint {n!r}')
    if len(self.link_colors) != len(self.links):
      self._fail(f'{len(self.link_colors)} link_colors for {len(self.links)} links')
    for color in self.keypoint_colors + self.link_colors:
      if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
        self._fail(f'colour {color!r} is not three integers in 0-255')
    for field in ('upper_body_ids', 'lower_body_ids'):
      for idx in getattr(self, field):
        if not (isinstance(idx, int) and 0 <= idx < k):
          self._fail(f'{field} holds {idx!r}, out of range for {k} keypoints')
    for part, start, stop in self.parts:
      if not (0 <= start < stop <= k):
        self._fail(f'part {part!r} slice [{start}, {stop}) is out of range for {k} keypoints')
    if self.head_segment is not None:
      if len(self.head_segment) != 2:
        self._fail(f'head_segment must name two keypoints, got {self.head_segment!r}')
      for n in self.head_segment:
        if n not in seen:
          self._fail(f'head_segment names unknown keypoint {n!r}')
    if self.source_names is not None and len(self.source_names) != k:
      self._fail(f'{len(self.source_names)} source_names for {k} keypoints')

  @property
  def num_keypoints(self) -> int:
    return len(self.keypoints)

  @property
  def flip_index(self) -> tuple[int, ...]:
    """The permutation a horizontal flip applies: output keypoint i takes input flip_index[i]."""
    perm = list(range(self.num_keypoints))
    for a, b in self.flip_pairs:
      perm[a], perm[b] = b, a
    return tuple(perm)

  def index(self, keypoint: str) -> int:
    try:
      return self.keypoints.index(keypoint)
    except ValueError:
      raise SchemaError(f'schema {self.name!r} has no keypoint {keypoint!r}') from None

  @property
  def link_indices(self) -> tuple[tuple[int, int], ...]:
    return tuple((self.index(a), self.index(b)) for a, b in self.links)

  def part(self, name: str) -> slice:
    for part, start, stop in self.parts:
      if part == name:
        return slice(start, stop)
    raise SchemaError(
        f'schema {self.name!r} has no part {name!r} (parts: {[p[0] for p in self.parts]})'
    )

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict holding every field; :func:`schema_from_dict` inverts it exactly."""
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = _to_lists(value)
    return out


def _to_lists(value):
  if isinstance(value, tuple):
    return [_to_lists(v) for v in value]
  return value


def make_schema(
    name: str,
    keypoints: Sequence[str],
    sigmas: Sequence[float],
    *,
    flip_pairs: Iterable[tuple[int | str, int | str]] | None = None,
    links: Iterable[tuple[int | str, int | str]] = (),
    joint_weights: Sequence[float] | None = None,
    upper_body_ids: Sequence[int | str] | None = None,
    lower_body_ids: Sequence[int | str] | None = None,
    keypoint_colors: Sequence[Sequence[int]] | None = None,
    link_colors: Sequence[Sequence[int]] | None = None,
    parts: Iterable[Sequence[Any]] | Mapping[str, Sequence[int]] = (),
    head_segment: Sequence[int | str] | None = None,
    source_names: Sequence[str] | None = None,
    sigma_note: str = '',
) -> Schema:
  """Builds a validated :class:`Schema`, deriving what the caller leaves out.

  Flip pairs default to the left/right name pairs (:func:`derive_flip_pairs`), with a
  :class:`SchemaWarning` naming any side-marked keypoint left without a partner; explicit
  ``flip_pairs`` are used exactly as given (a schema may pair across different indices on purpose,
  as Goliath-308 pairs ``r_border_of_pupil_3`` with ``l_border_of_pupil_9``). Joint weights default
  to 1, the body split and colours to name-based defaults. Keypoints may be referred to by index
  or by name anywhere.
  """
  keypoints = tuple(keypoints)
  index = {n: i for i, n in enumerate(keypoints)}

  def as_index(ref, what):
    if isinstance(ref, str):
      if ref not in index:
        raise SchemaError(f'schema {name!r}: {what} names unknown keypoint {ref!r}')
      return index[ref]
    if isinstance(ref, bool) or not isinstance(ref, int):
      raise SchemaError(f'schema {name!r}: {what} holds {ref!r}, not a keypoint index or name')
    return ref

  def as_name(ref, what):
    if isinstance(ref, str):
      return ref
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(keypoints):
      return keypoints[ref]
    raise SchemaError(f'schema {name!r}: {what} holds {ref!r}, out of range or not a name')

  def pairs(items, what):
    out = []
    for item in items:
      if len(item) != 2:
        raise SchemaError(f'schema {name!r}: {what} entry {item!r} is not a pair')
      out.append(tuple(item))
    return out

  if flip_pairs is None:
    flips = derive_flip_pairs(keypoints)
  else:
    # mmpose-style metadata lists each swap from both sides; keep one entry per pair.
    flips, seen = [], set()
    for a, b in pairs(flip_pairs, 'flip_pairs'):
      ia, ib = as_index(a, 'flip pair'), as_index(b, 'flip pair')
      if (ib, ia) in seen:
        continue
      seen.add((ia, ib))
      flips.append((ia, ib))
    flips = tuple(flips)
  link_names = tuple(
      (as_name(a, f'link {(a, b)!r}'), as_name(b, f'link {(a, b)!r}'))
      for a, b in pairs(links, 'links')
  )
  if upper_body_ids is None and lower_body_ids is None:
    upper, lower = derive_body_split(keypoints)
  else:
    lower = tuple(as_index(i, 'lower_body_ids') for i in (lower_body_ids or ()))
    if upper_body_ids is None:
      upper = tuple(i for i in range(len(keypoints)) if i not in set(lower))
    else:
      upper = tuple(as_index(i, 'upper_body_ids') for i in upper_body_ids)
  if isinstance(parts, Mapping):
    parts = [(p, *s) for p, s in parts.items()]
  part_tuples = []
  for p in parts:
    if len(p) != 3:
      raise SchemaError(f'schema {name!r}: part {p!r} is not (name, start, stop)')
    part_tuples.append((str(p[0]), int(p[1]), int(p[2])))
  schema = Schema(
      name=name,
      keypoints=keypoints,
      sigmas=tuple(float(s) for s in sigmas),
      flip_pairs=flips,
      links=link_names,
      joint_weights=tuple(float(w) for w in (joint_weights or [1.0] * len(keypoints))),
      upper_body_ids=upper,
      lower_body_ids=lower,
      keypoint_colors=tuple(
          tuple(int(c) for c in col)
          for col in (keypoint_colors or derive_keypoint_colors(keypoints))
      ),
      link_colors=tuple(
          tuple(int(c) for c in col) for col in (link_colors or derive_link_colors(link_names))
      ),
      parts=tuple(part_tuples),
      head_segment=(
          None if head_segment is None
          else tuple(as_name(n, 'head_segment') for n in head_segment)
      ),
      source_names=None if source_names is None else tuple(source_names),
      sigma_note=sigma_note,
  )
  unpaired = unpaired_side_names(keypoints, flips) if flip_pairs is None else ()
  if unpaired:
    # A flip then mirrors these points' positions without swapping their labels, which corrupts
    # every flipped training sample and the flip test; say so where the pairs are decided.
    warnings.warn(
        f'schema {name!r}: keypoint(s) {", ".join(map(repr, unpaired))} carry a left/right '
        'marker but no other name mirrors them, so a horizontal flip keeps their labels; name '
        'both sides alike (LEye/REye, l_eye/r_eye, eye_L/eye_R, left_eye/right_eye) or list '
        'flip_pairs explicitly', SchemaWarning, stacklevel=2)
  return schema


_FIELDS = tuple(f.name for f in dataclasses.fields(Schema))
_REQUIRED = ('name', 'keypoints', 'sigmas')


def schema_from_dict(data: Mapping[str, Any], *, source: str = '') -> Schema:
  """Builds a schema from its JSON form; unknown or missing fields are errors naming them."""
  where = f'{source}: ' if source else ''
  if not isinstance(data, Mapping):
    raise SchemaError(f'{where}a schema must be a JSON object, got {type(data).__name__}')
  unknown = sorted(set(data) - set(_FIELDS))
  if unknown:
    raise SchemaError(
        f'{where}schema {data.get("name")!r}: unknown field(s) {unknown} '
        f'(known: {", ".join(_FIELDS)})'
    )
  missing = [f for f in _REQUIRED if f not in data]
  if missing:
    raise SchemaError(f'{where}schema {data.get("name")!r}: missing field(s) {missing}')
  try:
    return make_schema(**data)
  except SchemaError as e:
    raise SchemaError(f'{where}{e}') from None
  except (TypeError, ValueError) as e:
    raise SchemaError(f'{where}schema {data.get("name")!r}: {e}') from None


def load_schema_json(path: str | os.PathLike[str]) -> Schema:
  """Reads a user schema from a JSON file (the format ``python -m vitpose_jax.skeletons NAME
  --json`` prints)."""
  path = os.fspath(path)
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise SchemaError(f'{path}: schema file not found') from None
  except json.JSONDecodeError as e:
    raise SchemaError(f'{path}: not valid JSON ({e})') from None
  return schema_from_dict(data, source=path)


def keypoint_mapping(src: Schema, dst: Schema) -> tuple[tuple[int, int], ...]:
  """Index pairs (i_src, i_dst) of the keypoints both schemas name alike, in ``src`` order.

  This is how labels of one schema supervise or evaluate another (e.g. infant ↔ COCO-17 share
  hips, knees, ankles, shoulders, elbows, wrists and the nose).
  """
  dst_index = {n: i for i, n in enumerate(dst.keypoints)}
  return tuple((i, dst_index[n]) for i, n in enumerate(src.keypoints) if n in dst_index)


# Spellings of one point that differ by more than case, separators and side initials, as
# split_side keys. Only names that mean the same point in every dataset that uses them belong here.
_SYNONYMS = {
    # CrowdPose's metadata says top_head (mmpose configs/_base_/datasets/crowdpose.py) where AIC,
    # MPII and PoseTrack say head_top; mmpose's body8 configs map both onto Halpe's head.
    (None, ('top', 'head')): (None, ('head', 'top')),
}


def match_keypoint_names(names: Sequence[str], schema: Schema) -> tuple[int | None, ...]:
  """For each of a file's keypoint names, the index of the schema keypoint it names, or None.

  A name matches a schema keypoint, or failing that its ``source_names`` entry:
    1. exactly;
    2. else by its words and side (:func:`split_side`), ignoring case, separators (space, ``-``,
       ``_``) and camelCase, with a side initial read as the side: ``'Right Shoulder'``,
       ``'Right-shoulder'``, ``'RShoulder'`` and ``'shoulder_R'`` match ``right_shoulder``,
       ``'Head top'`` matches ``head_top``. A spelling that fits several keypoints matches none;
    3. else through a synonym: ``top_head`` (CrowdPose) is ``head_top`` (AIC, MPII, PoseTrack).

  Deliberately not synonyms, because datasets use them for different points: ``head`` (the head
  top in CrowdPose and Halpe files, the skull's centre joint in SMPL/SMIL and so in
  ``infant_smil25``) and ``head_top``; ``neck`` (the neck's base in SMPL/SMIL, MPII's thorax) and
  ``upper_neck``; ``pelvis`` and ``mid_hip`` (mmpose's body8 configs map MPII's upper_neck and
  head_top onto Halpe's neck and head but leave its pelvis off Halpe's hip). A file using one for
  the other leaves those labels unmatched, and readers count and report them; a user schema whose
  ``source_names`` spell the file's names places them.

  Raises ValueError when two names match the same keypoint.
  """
  # The schema's own names before its source names, so that a spelling which fits one of each
  # (infant_smil25: 'left-shoulder' is its left_shoulder, SMIL's 'leftShoulder' its left_collar)
  # goes to the schema's.
  tiers = []
  for spellings in (schema.keypoints, schema.source_names or ()):
    loose: dict[tuple, set[int]] = collections.defaultdict(set)
    for i, n in enumerate(spellings):
      loose[split_side(n)].add(i)
    tiers.append(({n: i for i, n in enumerate(spellings)}, loose))
  out = []
  for name in names:
    key = split_side(name)
    keys = [k for k in (key, _SYNONYMS.get(key)) if k is not None and k[1]]
    index = next((exact[name] for exact, _ in tiers if name in exact), None)
    for k in keys:
      for _, loose in tiers:
        if index is None and len(loose.get(k, ())) == 1:
          index = next(iter(loose[k]))
    out.append(index)
  claimed: dict[int, str] = {}
  for name, index in zip(names, out):
    if index is not None:
      if index in claimed:
        raise ValueError(f'keypoint names {claimed[index]!r} and {name!r} both match keypoint '
                         f'{schema.keypoints[index]!r} of schema {schema.name}')
      claimed[index] = name
  return tuple(out)
