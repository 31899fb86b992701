"""The built-in schemas (docs/design.md).

Names, sigmas, joint weights and links follow the datasets' own metadata as mmpose publishes it
(configs/_base_/datasets/*.py), renamed to snake_case where a dataset uses other spellings; the
dataset's own names are kept in ``source_names``. Goliath-308's metadata comes from Meta's Sapiens
(pose/configs/_base_/datasets/goliath.py), stored as data in goliath308.json.
"""

from __future__ import annotations

import functools
import importlib.resources
import json

from vitpose_jax.skeletons.schema import CENTRE_COLOR, Schema, make_schema

COCO17_KEYPOINTS = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)
COCO17_SIGMAS = (
    .026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087,
    .089, .089,
)
COCO17_JOINT_WEIGHTS = (1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5)
COCO17_LINKS = (
    ('left_ankle', 'left_knee'), ('left_knee', 'left_hip'), ('right_ankle', 'right_knee'),
    ('right_knee', 'right_hip'), ('left_hip', 'right_hip'), ('left_shoulder', 'left_hip'),
    ('right_shoulder', 'right_hip'), ('left_shoulder', 'right_shoulder'),
    ('left_shoulder', 'left_elbow'), ('right_shoulder', 'right_elbow'),
    ('left_elbow', 'left_wrist'), ('right_elbow', 'right_wrist'), ('left_eye', 'right_eye'),
    ('nose', 'left_eye'), ('nose', 'right_eye'), ('left_eye', 'left_ear'),
    ('right_eye', 'right_ear'), ('left_ear', 'left_shoulder'), ('right_ear', 'right_shoulder'),
)
COCO17_UPPER = tuple(range(11))
COCO17_LOWER = tuple(range(11, 17))

_COCO_NOTE = 'COCO keypoint OKS sigmas (cocodataset.org, as in pycocotools and mmpose coco.py).'


def coco17() -> Schema:
  return make_schema(
      'coco17', COCO17_KEYPOINTS, COCO17_SIGMAS,
      links=COCO17_LINKS, joint_weights=COCO17_JOINT_WEIGHTS,
      upper_body_ids=COCO17_UPPER, lower_body_ids=COCO17_LOWER, sigma_note=_COCO_NOTE,
  )


_FOOT = ('left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe',
         'right_heel')
_FOOT_SIGMAS = (.068, .066, .066, .092, .094, .094)
_FACE_SIGMAS = (
    .042, .043, .044, .043, .040, .035, .031, .025, .020, .023, .029, .032, .037, .038, .043, .041,
    .045, .013, .012, .011, .011, .012, .012, .011, .011, .013, .015, .009, .007, .007, .007, .012,
    .009, .008, .016, .010, .017, .011, .009, .011, .009, .007, .013, .008, .011, .012, .010, .034,
    .008, .008, .009, .008, .008, .007, .010, .008, .009, .009, .009, .007, .007, .008, .011, .008,
    .008, .008, .010, .008,
)
_HAND_SIGMAS = (
    .029, .022, .035, .037, .047, .026, .025, .024, .035, .018, .024, .022, .026, .017, .021, .021,
    .032, .020, .019, .022, .031,
)
_FINGERS = ('thumb', 'forefinger', 'middle_finger', 'ring_finger', 'pinky_finger')
_FINGER_COLORS = ((255, 128, 0), (255, 153, 255), (102, 178, 255), (255, 51, 51), (0, 255, 0))
_FACE_COLOR = (255, 255, 255)

# The 68-landmark face (iBUG 300-W order): its left/right pairs cannot be read from 'face-N' names.
_FACE_FLIPS = (
    [(i, 16 - i) for i in range(8)]            # jaw
    + [(17 + i, 26 - i) for i in range(5)]     # brows
    + [(31, 35), (32, 34)]                     # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]            # outer lips
    + [(60, 64), (61, 63), (65, 67)]                                # inner lips
)
# Contours of the 68-landmark face, drawn so a face reads as a face (mmpose draws none).
_FACE_CHAINS = (
    (range(0, 17), False), (range(17, 22), False), (range(22, 27), False), (range(27, 31), False),
    (range(31, 36), False), (range(36, 42), True), (range(42, 48), True), (range(48, 60), True),
    (range(60, 68), True),
)


def _hand(side: str) -> tuple[str, ...]:
  return (f'{side}_hand_root',) + tuple(
      f'{side}_{finger}{j}' for finger in _FINGERS for j in range(1, 5)
  )


def _hand_links(side: str):
  links, colors = [], []
  for finger, color in zip(_FINGERS, _FINGER_COLORS):
    chain = [f'{side}_hand_root'] + [f'{side}_{finger}{j}' for j in range(1, 5)]
    links += list(zip(chain[:-1], chain[1:]))
    colors += [color] * 4
  return links, colors


def coco_wholebody133() -> Schema:
  face = tuple(f'face-{i}' for i in range(68))
  keypoints = COCO17_KEYPOINTS + _FOOT + face + _hand('left') + _hand('right')
  body_base = coco17()
  foot_links = [(f'{s}_ankle', f'{s}_{p}') for s in ('left', 'right')
                for p in ('big_toe', 'small_toe', 'heel')]
  face_links = []
  for chain, closed in _FACE_CHAINS:
    idx = list(chain) + ([chain[0]] if closed else [])
    face_links += [(face[a], face[b]) for a, b in zip(idx[:-1], idx[1:])]
  left_links, left_colors = _hand_links('left')
  right_links, right_colors = _hand_links('right')
  links = list(COCO17_LINKS) + foot_links + face_links + left_links + right_links
  link_colors = (
      list(body_base.link_colors)
      + [(0, 255, 0)] * 3 + [(255, 128, 0)] * 3
      + [_FACE_COLOR] * len(face_links) + left_colors + right_colors
  )
  hand_kp_colors = [(255, 255, 255)] + [c for c in _FINGER_COLORS for _ in range(4)]
  keypoint_colors = (
      list(body_base.keypoint_colors)
      + [(0, 255, 0)] * 3 + [(255, 128, 0)] * 3
      + [_FACE_COLOR] * 68 + hand_kp_colors * 2
  )
  body_flips = [(a, b) for a, b in body_base.flip_pairs]
  foot_flips = [(17 + i, 20 + i) for i in range(3)]
  face_flips = [(23 + a, 23 + b) for a, b in _FACE_FLIPS]
  hand_flips = [(91 + i, 112 + i) for i in range(21)]
  upper = list(COCO17_UPPER) + list(range(23, 133))
  lower = list(COCO17_LOWER) + list(range(17, 23))
  return make_schema(
      'coco_wholebody133', keypoints,
      COCO17_SIGMAS + _FOOT_SIGMAS + _FACE_SIGMAS + _HAND_SIGMAS * 2,
      flip_pairs=body_flips + foot_flips + face_flips + hand_flips,
      links=links, link_colors=link_colors, keypoint_colors=keypoint_colors,
      upper_body_ids=upper, lower_body_ids=lower,
      parts=(('body', 0, 17), ('foot', 17, 23), ('face', 23, 91), ('lefthand', 91, 112),
             ('righthand', 112, 133)),
      sigma_note=('COCO-WholeBody release sigmas '
                  '(mmpose configs/_base_/datasets/coco_wholebody.py).'),
  )


# MINI-RGBD's SMIL joints, in its order. SMPL names a joint after the bone that starts there, so
# the anatomical name of 'leftThigh' is the left hip, 'leftUpperArm' the left shoulder, and so on.
INFANT_SOURCE_NAMES = (
    'global', 'leftThigh', 'rightThigh', 'spine', 'leftCalf', 'rightCalf', 'spine1', 'leftFoot',
    'rightFoot', 'spine2', 'leftToes', 'rightToes', 'neck', 'leftShoulder', 'rightShoulder',
    'head', 'leftUpperArm', 'rightUpperArm', 'leftForeArm', 'rightForeArm', 'leftHand',
    'rightHand', 'leftFingers', 'rightFingers', 'noseVertex',
)
_INFANT = (
    ('pelvis', .107), ('left_hip', .107), ('right_hip', .107), ('spine', .107),
    ('left_knee', .087), ('right_knee', .087), ('spine1', .107), ('left_ankle', .089),
    ('right_ankle', .089), ('spine2', .107), ('left_toe', .068), ('right_toe', .068),
    ('neck', .079), ('left_collar', .079), ('right_collar', .079), ('head', .079),
    ('left_shoulder', .079), ('right_shoulder', .079), ('left_elbow', .072),
    ('right_elbow', .072), ('left_wrist', .062), ('right_wrist', .062), ('left_hand_tip', .062),
    ('right_hand_tip', .062), ('nose', .026),
)
_INFANT_LINKS = (
    ('pelvis', 'left_hip'), ('pelvis', 'right_hip'), ('pelvis', 'spine'),
    ('left_hip', 'left_knee'), ('right_hip', 'right_knee'), ('spine', 'spine1'),
    ('left_knee', 'left_ankle'), ('right_knee', 'right_ankle'), ('spine1', 'spine2'),
    ('left_ankle', 'left_toe'), ('right_ankle', 'right_toe'), ('spine2', 'neck'),
    ('spine2', 'left_collar'), ('spine2', 'right_collar'), ('neck', 'head'),
    ('left_collar', 'left_shoulder'), ('right_collar', 'right_shoulder'),
    ('left_shoulder', 'left_elbow'), ('right_shoulder', 'right_elbow'),
    ('left_elbow', 'left_wrist'), ('right_elbow', 'right_wrist'),
    ('left_wrist', 'left_hand_tip'), ('right_wrist', 'right_hand_tip'), ('head', 'nose'),
)


def _weights_like_coco(keypoints) -> tuple[float, ...]:
  coco = dict(zip(COCO17_KEYPOINTS, COCO17_JOINT_WEIGHTS))
  return tuple(coco.get(n, 1.0) for n in keypoints)


def infant_smil25() -> Schema:
  names = tuple(n for n, _ in _INFANT)
  return make_schema(
      'infant_smil25', names, tuple(s for _, s in _INFANT),
      links=_INFANT_LINKS, joint_weights=_weights_like_coco(names),
      head_segment=('head', 'neck'), source_names=INFANT_SOURCE_NAMES,
      sigma_note=(
          'No published OKS sigmas exist for MINI-RGBD. vitpose_jax defaults: the COCO sigma of '
          'the same joint (hip .107, knee .087, ankle .089, shoulder .079, elbow .072, wrist .062, '
          'nose .026); pelvis and spine/spine1/spine2 .107; neck, collar and head .079; toe .068 '
          '(COCO-WholeBody big toe); hand tip .062.'
      ),
  )


_CHAIR = (
    ('left_rear_wheel_hub', .107), ('right_rear_wheel_hub', .107),
    ('left_wheel_ground_contact', .089), ('right_wheel_ground_contact', .089),
    ('left_footrest', .089), ('right_footrest', .089),
)
_CHAIR_LINKS = (
    ('left_rear_wheel_hub', 'left_wheel_ground_contact'),
    ('right_rear_wheel_hub', 'right_wheel_ground_contact'),
    ('left_rear_wheel_hub', 'right_rear_wheel_hub'), ('left_footrest', 'right_footrest'),
    ('left_hip', 'left_rear_wheel_hub'), ('right_hip', 'right_rear_wheel_hub'),
    ('left_ankle', 'left_footrest'), ('right_ankle', 'right_footrest'),
)


def wheelchair23() -> Schema:
  names = COCO17_KEYPOINTS + tuple(n for n, _ in _CHAIR)
  return make_schema(
      'wheelchair23', names, COCO17_SIGMAS + tuple(s for _, s in _CHAIR),
      links=COCO17_LINKS + _CHAIR_LINKS, joint_weights=COCO17_JOINT_WEIGHTS + (1.0,) * 6,
      upper_body_ids=COCO17_UPPER, lower_body_ids=COCO17_LOWER + tuple(range(17, 23)),
      sigma_note=(
          'COCO-17 sigmas for the body; chair points are vitpose_jax defaults: wheel hubs .107 '
          '(as hips), wheel-ground contacts and footrests .089 (as ankles). WheelPose publishes '
          'COCO-17 labels only: chair points then carry weight 0.'
      ),
  )


def aggpose21() -> Schema:
  names = tuple(f'R{i}' for i in range(1, 10)) + tuple(f'L{i}' for i in range(1, 10)) + (
      'M1', 'M2', 'M3')
  return make_schema(
      'aggpose21', names, (0.05,) * 21, flip_pairs=[(i, i + 9) for i in range(9)],
      # Drawn in the centre colour, as before side initials (R1, L1) were read from names: a
      # run's model.json holds its schema's colours, and a changed built-in would differ from it.
      keypoint_colors=(CENTRE_COLOR,) * 21,
      upper_body_ids=list(range(21)), lower_body_ids=[],
      sigma_note='AggPose infant keypoints; no published sigmas, 0.05 for every keypoint.',
  )


_AIC = (
    'right_shoulder', 'right_elbow', 'right_wrist', 'left_shoulder', 'left_elbow', 'left_wrist',
    'right_hip', 'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle', 'head_top',
    'neck',
)


def aic14() -> Schema:
  return make_schema(
      'aic14', _AIC,
      (.01388152, .01515228, .01057665, .01417709, .01497891, .01402144, .03909642, .03686941,
       .01981803, .03843971, .03412318, .02415081, .01291456, .01236173),
      links=(('right_wrist', 'right_elbow'), ('right_elbow', 'right_shoulder'),
             ('right_shoulder', 'neck'), ('neck', 'left_shoulder'),
             ('left_shoulder', 'left_elbow'), ('left_elbow', 'left_wrist'),
             ('right_ankle', 'right_knee'), ('right_knee', 'right_hip'),
             ('right_hip', 'left_hip'), ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
             ('head_top', 'neck'), ('right_shoulder', 'right_hip'),
             ('left_shoulder', 'left_hip')),
      joint_weights=(1., 1.2, 1.5, 1., 1.2, 1.5, 1., 1.2, 1.5, 1., 1.2, 1.5, 1., 1.),
      upper_body_ids=(0, 1, 2, 3, 4, 5, 12, 13), lower_body_ids=(6, 7, 8, 9, 10, 11),
      head_segment=('head_top', 'neck'),
      sigma_note='AI Challenger sigmas (mmpose configs/_base_/datasets/aic.py).',
  )


_MPII = (
    'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle', 'pelvis',
    'thorax', 'upper_neck', 'head_top', 'right_wrist', 'right_elbow', 'right_shoulder',
    'left_shoulder', 'left_elbow', 'left_wrist',
)


def mpii16() -> Schema:
  return make_schema(
      'mpii16', _MPII,
      (.089, .083, .107, .107, .083, .089, .026, .026, .026, .026, .062, .072, .179, .179, .072,
       .062),
      links=(('right_ankle', 'right_knee'), ('right_knee', 'right_hip'), ('right_hip', 'pelvis'),
             ('pelvis', 'left_hip'), ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
             ('pelvis', 'thorax'), ('thorax', 'upper_neck'), ('upper_neck', 'head_top'),
             ('upper_neck', 'right_shoulder'), ('right_shoulder', 'right_elbow'),
             ('right_elbow', 'right_wrist'), ('upper_neck', 'left_shoulder'),
             ('left_shoulder', 'left_elbow'), ('left_elbow', 'left_wrist')),
      joint_weights=(1.5, 1.2, 1., 1., 1.2, 1.5, 1., 1., 1., 1., 1.5, 1.2, 1., 1., 1.2, 1.5),
      upper_body_ids=(7, 8, 9, 10, 11, 12, 13, 14, 15), lower_body_ids=(0, 1, 2, 3, 4, 5, 6),
      head_segment=('head_top', 'upper_neck'),
      sigma_note='MPII sigmas as mmpose lists them (configs/_base_/datasets/mpii.py).',
  )


_AP10K_SOURCE = (
    'L_Eye', 'R_Eye', 'Nose', 'Neck', 'Root of tail', 'L_Shoulder', 'L_Elbow', 'L_F_Paw',
    'R_Shoulder', 'R_Elbow', 'R_F_Paw', 'L_Hip', 'L_Knee', 'L_B_Paw', 'R_Hip', 'R_Knee', 'R_B_Paw',
)
_AP10K = (
    'left_eye', 'right_eye', 'nose', 'neck', 'root_of_tail', 'left_shoulder', 'left_elbow',
    'left_front_paw', 'right_shoulder', 'right_elbow', 'right_front_paw', 'left_hip',
    'left_knee', 'left_back_paw', 'right_hip', 'right_knee', 'right_back_paw',
)
_AP10K_LINKS = (
    ('left_eye', 'right_eye'), ('left_eye', 'nose'), ('right_eye', 'nose'), ('nose', 'neck'),
    ('neck', 'root_of_tail'), ('neck', 'left_shoulder'), ('left_shoulder', 'left_elbow'),
    ('left_elbow', 'left_front_paw'), ('neck', 'right_shoulder'),
    ('right_shoulder', 'right_elbow'), ('right_elbow', 'right_front_paw'),
    ('root_of_tail', 'left_hip'), ('left_hip', 'left_knee'), ('left_knee', 'left_back_paw'),
    ('root_of_tail', 'right_hip'), ('right_hip', 'right_knee'), ('right_knee', 'right_back_paw'),
)
_AP10K_SIGMAS = (
    .025, .025, .026, .035, .035, .079, .072, .062, .079, .072, .062, .107, .087, .089, .107,
    .087, .089,
)


def _animal17(name: str, note: str) -> Schema:
  return make_schema(
      name, _AP10K, _AP10K_SIGMAS, links=_AP10K_LINKS, source_names=_AP10K_SOURCE,
      joint_weights=COCO17_JOINT_WEIGHTS, upper_body_ids=tuple(range(11)),
      lower_body_ids=tuple(range(11, 17)), sigma_note=note,
  )


def ap10k17() -> Schema:
  return _animal17('ap10k17', 'AP-10K sigmas (mmpose configs/_base_/datasets/ap10k.py).')


def apt36k17() -> Schema:
  return _animal17(
      'apt36k17', 'APT-36K uses the AP-10K keypoints and sigmas (official ViTPose apt36k configs).'
  )


@functools.cache
def _goliath_record() -> dict:
  """goliath308.json: Sapiens' Goliath keypoint metadata as data (see :func:`goliath308`)."""
  return json.loads(
      importlib.resources.files('vitpose_jax.skeletons').joinpath('goliath308.json').read_text()
  )


def goliath308() -> Schema:
  """Meta's Goliath-308 keypoints, as the Sapiens pose models predict them.

  Source: facebookresearch/sapiens, pose/configs/_base_/datasets/goliath.py (CC BY-NC 4.0, as are
  Sapiens' code and weights), held in goliath308.json: names, each point's ``swap`` partner, OKS
  sigmas, colours, links and upper/lower types, in Sapiens' order after its ``remove_teeth`` step
  drops the 36 teeth points of the 344 it defines. The order is Sapiens': 15 body points (COCO-17
  without the wrists), 6 foot, 20 right-hand points then ``right_wrist``, 20 left-hand points then
  ``left_wrist``, 7 extra (olecranon, cubital fossa, acromion, neck) and 238 face points. The
  names are Sapiens' own, which use COCO-WholeBody's spellings for the points both share, so
  :func:`~vitpose_jax.skeletons.keypoint_mapping` finds the 17 COCO points and 53 COCO-WholeBody
  points exactly as Sapiens' name matching does.

  Flip pairs are Sapiens' ``swap`` fields, never derived from names: many face contours pair
  differently numbered points (``l_border_of_iris_3`` with ``r_border_of_iris_9``), and the face's
  side marker sits inside the name (``end_of_r_eyebrow``). Sixteen midline points swap with
  themselves. Parts are the slices of that order, so ``body`` holds 15 points and each hand part
  its 20 points plus the wrist (21, as a COCO-WholeBody hand with its root). Joint weights are 1;
  half-body augmentation puts Sapiens' ``lower`` points (hips, knees, ankles, feet) in the lower
  body and everything else, face and hands included, in the upper, as ``coco_wholebody133`` does.
  """
  rec = _goliath_record()
  names = rec['keypoints']
  index = {n: i for i, n in enumerate(names)}
  flips = sorted({tuple(sorted((i, index[p]))) for i, p in enumerate(rec['flip_partner']) if p})
  lower = [i for i, t in enumerate(rec['half_body']) if t == 'lower']
  sizes = (('body', 15), ('feet', 6), ('right_hand', 21), ('left_hand', 21), ('extra', 7),
           ('face', 238))
  parts, start = [], 0
  for part, size in sizes:
    parts.append((part, start, start + size))
    start += size
  return make_schema(
      'goliath308', names, rec['sigmas'], flip_pairs=flips,
      links=[tuple(link) for link in rec['links']], link_colors=rec['link_colors'],
      keypoint_colors=rec['keypoint_colors'],
      upper_body_ids=[i for i in range(len(names)) if i not in set(lower)], lower_body_ids=lower,
      parts=parts,
      sigma_note=(
          'Sapiens Goliath sigmas (facebookresearch/sapiens pose/configs/_base_/datasets/'
          'goliath.py, CC BY-NC 4.0): COCO-WholeBody sigmas for the points named alike; finger '
          'third joints .022/.026/.018/.017/.020 (thumb to pinky), neck and acromion .079, '
          'olecranon and cubital fossa .072; .010 for every other point, the face.'
      ),
  )


BUILTINS = (
    coco17, coco_wholebody133, infant_smil25, wheelchair23, aggpose21, aic14, mpii16, ap10k17,
    apt36k17, goliath308,
)
