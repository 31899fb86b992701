"""Side names: flip pairs derived from every common left/right convention, loud warnings for what
stays unpaired, explicit pairs kept as given, the built-ins' pairs pinned, and keypoint names of
real releases matched to schemas ignoring case, separators and side spellings."""

import json
import subprocess
import sys
import warnings

import pytest

from vitpose_jax import skeletons
from vitpose_jax.skeletons import SchemaWarning, make_schema, match_keypoint_names


def _pairs_by_name(s):
  return [(s.keypoints[a], s.keypoints[b]) for a, b in s.flip_pairs]


@pytest.mark.parametrize('left, right', [
    ('left_shoulder', 'right_shoulder'), ('LShoulder', 'RShoulder'), ('l_shoulder', 'r_shoulder'),
    ('shoulder_L', 'shoulder_R'), ('shoulder_l', 'shoulder_r'), ('LeftShoulder', 'RightShoulder'),
    ('leftShoulder', 'rightShoulder'), ('Left Shoulder', 'Right Shoulder'),
    ('left-shoulder', 'right-shoulder'), ('L_Shoulder', 'R_Shoulder'), ('left_x', 'right_x'),
    ('face_left_cheek', 'face_right_cheek'), ('L1', 'R1'),
])
def test_flip_pairs_are_derived_from_every_common_side_convention(left, right):
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    s = make_schema('u', ['nose', right, left, 'neck'], [.05] * 4)
  assert _pairs_by_name(s) == [(left, right)]
  assert s.flip_index == (0, 2, 1, 3)


def test_a_side_marked_name_left_unpaired_is_a_loud_warning_naming_it():
  with pytest.warns(SchemaWarning, match=r"schema 'u': keypoint\(s\) 'LEye' carry a left/right"):
    s = make_schema('u', ['nose', 'LShoulder', 'RShoulder', 'LEye'], [.05] * 4)
  assert _pairs_by_name(s) == [('LShoulder', 'RShoulder')]
  assert skeletons.unpaired_side_names(s.keypoints, s.flip_pairs) == ('LEye',)


def test_two_spellings_of_one_side_pair_with_nothing_and_are_named():
  with pytest.warns(SchemaWarning, match="'LEye', 'l_eye', 'REye'"):
    s = make_schema('u', ['LEye', 'l_eye', 'REye'], [.05] * 3)
  assert s.flip_pairs == ()


def test_explicit_flip_pairs_win_and_are_not_second_guessed():
  """Goliath-308 pairs r_border_of_pupil_3 with l_border_of_pupil_9 on purpose."""
  names = ['r_border_of_pupil_3', 'l_border_of_pupil_9', 'r_border_of_pupil_9',
           'l_border_of_pupil_3', 'LEye']
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    s = make_schema('goliath_like', names, [.05] * 5, flip_pairs=[(0, 1), (2, 3)])
  assert s.flip_pairs == ((0, 1), (2, 3))
  assert skeletons.derive_flip_pairs(names) == ((1, 2), (3, 0))


def test_names_without_side_markers_derive_no_pairs_and_no_warning():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    s = make_schema('u', ['head', 'tail', 'lower_lip', 'upper_lip', 'spine1'], [.05] * 5)
  assert s.flip_pairs == ()


# The pairs every built-in derived before side initials were read (commit 2dc1240), by name.
_DERIVED = {
    'coco17': [('left_eye', 'right_eye'), ('left_ear', 'right_ear'),
               ('left_shoulder', 'right_shoulder'), ('left_elbow', 'right_elbow'),
               ('left_wrist', 'right_wrist'), ('left_hip', 'right_hip'),
               ('left_knee', 'right_knee'), ('left_ankle', 'right_ankle')],
    'infant_smil25': [('left_hip', 'right_hip'), ('left_knee', 'right_knee'),
                      ('left_ankle', 'right_ankle'), ('left_toe', 'right_toe'),
                      ('left_collar', 'right_collar'), ('left_shoulder', 'right_shoulder'),
                      ('left_elbow', 'right_elbow'), ('left_wrist', 'right_wrist'),
                      ('left_hand_tip', 'right_hand_tip')],
    'aic14': [('left_shoulder', 'right_shoulder'), ('left_elbow', 'right_elbow'),
              ('left_wrist', 'right_wrist'), ('left_hip', 'right_hip'),
              ('left_knee', 'right_knee'), ('left_ankle', 'right_ankle')],
    'mpii16': [('left_hip', 'right_hip'), ('left_knee', 'right_knee'),
               ('left_ankle', 'right_ankle'), ('left_shoulder', 'right_shoulder'),
               ('left_elbow', 'right_elbow'), ('left_wrist', 'right_wrist')],
    'ap10k17': [('left_eye', 'right_eye'), ('left_shoulder', 'right_shoulder'),
                ('left_elbow', 'right_elbow'), ('left_front_paw', 'right_front_paw'),
                ('left_hip', 'right_hip'), ('left_knee', 'right_knee'),
                ('left_back_paw', 'right_back_paw')],
}
_DERIVED['wheelchair23'] = _DERIVED['coco17'] + [
    ('left_rear_wheel_hub', 'right_rear_wheel_hub'),
    ('left_wheel_ground_contact', 'right_wheel_ground_contact'),
    ('left_footrest', 'right_footrest')]
_DERIVED['apt36k17'] = _DERIVED['ap10k17']


@pytest.mark.parametrize('name', sorted(_DERIVED))
def test_builtin_derived_pairs_are_unchanged(name):
  s = skeletons.get(name)
  assert _pairs_by_name(s) == _DERIVED[name]
  assert skeletons.derive_flip_pairs(s.keypoints) == s.flip_pairs


def test_builtins_build_without_warnings():
  from vitpose_jax.skeletons import builtin
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    for factory in builtin.BUILTINS:
      factory()


def test_cli_prints_flip_pairs_by_name_and_the_unpaired(tmp_path):
  path = tmp_path / 'u.json'
  path.write_text(json.dumps({'name': 'u', 'keypoints': ['nose', 'LShoulder', 'RShoulder', 'LEye'],
                              'sigmas': [.05] * 4}))
  done = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons', str(path)],
                        capture_output=True, text=True, check=True)
  assert '  flip pairs: LShoulder/RShoulder\n' in done.stdout
  assert 'side-marked but unpaired (a flip keeps their labels): LEye' in done.stdout
  assert "'LEye' carry a left/right marker" in done.stderr
  builtin = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons', 'aggpose21'],
                           capture_output=True, text=True, check=True).stdout
  assert 'flip pairs: R1/L1, R2/L2' in builtin


# Keypoint names as real releases spell them (mmpose tests/data: aic, mhp, crowdpose, ap10k).
_AIC_FILE = ['Right Shoulder', 'Right Elbow', 'Right Wrist', 'Left Shoulder', 'Left Elbow',
             'Left Wrist', 'Right Hip', 'Right Knee', 'Right Ankle', 'Left Hip', 'Left Knee',
             'Left Ankle', 'Head top', 'Neck']
_MHP_FILE = ['Right-ankle', 'Right-knee', 'Right-hip', 'Left-hip', 'Left-knee', 'Left-ankle',
             'Pelvis', 'Thorax', 'Upper-neck', 'Head-top', 'Right-wrist', 'Right-elbow',
             'Right-shoulder', 'Left-shoulder', 'Left-elbow', 'Left-wrist']


@pytest.mark.parametrize('schema, names', [('aic14', _AIC_FILE), ('mpii16', _MHP_FILE)])
def test_release_spellings_match_the_builtin_names_in_order(schema, names):
  s = skeletons.get(schema)
  assert match_keypoint_names(names, s) == tuple(range(s.num_keypoints))


def test_openpose_and_camel_spellings_match_coco_names():
  coco = skeletons.get('coco17')
  got = match_keypoint_names(['Nose', 'LEye', 'REar', 'LShoulder', 'RightElbow', 'wrist_L',
                              'r-hip', 'MidHip'], coco)
  assert got == (0, 1, 4, 5, 8, 9, 12, None)


def test_synonyms_are_documented_ones_only():
  aic = skeletons.get('aic14')
  assert match_keypoint_names(['top_head'], aic) == match_keypoint_names(['TopHead'], aic) == (12,)
  # 'head' is the head top in CrowdPose but the skull's centre in SMPL/SMIL: never guessed.
  assert match_keypoint_names(['head', 'neck'], aic) == (None, 13)
  assert match_keypoint_names(['upper_neck'], aic) == (None,)
  assert match_keypoint_names(['mid_hip'], skeletons.get('mpii16')) == (None,)


def test_source_names_match_after_the_schemas_own():
  infant = skeletons.get('infant_smil25')
  # SMIL's leftShoulder is the collar; a plain 'left-shoulder' is the schema's left_shoulder.
  assert match_keypoint_names(['leftShoulder', 'left-shoulder', 'leftThigh'], infant) == (
      infant.index('left_collar'), infant.index('left_shoulder'), infant.index('left_hip'))
  ap10k = skeletons.get('ap10k17')
  assert match_keypoint_names(['L_F_Paw', 'Root of tail'], ap10k) == (7, 4)


def test_two_names_for_one_keypoint_are_an_error_naming_both():
  with pytest.raises(ValueError, match="'Head top' and 'top_head' both match keypoint 'head_top'"):
    match_keypoint_names(['Head top', 'top_head'], skeletons.get('aic14'))
