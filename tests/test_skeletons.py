"""Keypoint schemas: built-in facts, validation errors, JSON round trips, name mapping, the CLI."""

import json
import subprocess
import sys

import pytest

from vitpose_jax import skeletons
from vitpose_jax.skeletons import SchemaError, make_schema

BUILTIN_SIZES = {
    'coco17': 17, 'coco_wholebody133': 133, 'infant_smil25': 25, 'wheelchair23': 23,
    'aggpose21': 21, 'aic14': 14, 'mpii16': 16, 'ap10k17': 17, 'apt36k17': 17, 'goliath308': 308,
}


def test_every_builtin_is_registered_with_its_keypoint_count():
  for name, k in BUILTIN_SIZES.items():
    s = skeletons.get(name)
    assert s.num_keypoints == k, name
    assert len(s.sigmas) == k and len(s.joint_weights) == k
  assert set(BUILTIN_SIZES) <= set(skeletons.names())


def test_builtin_sigmas_match_the_reference_values():
  coco = skeletons.get('coco17')
  assert coco.sigmas == (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107,
                         .107, .087, .087, .089, .089)
  wb = skeletons.get('coco_wholebody133')
  assert wb.sigmas[:17] == coco.sigmas
  assert wb.sigmas[17:23] == (.068, .066, .066, .092, .094, .094)
  assert wb.sigmas[wb.part('lefthand')] == wb.sigmas[wb.part('righthand')]
  infant = dict(zip(skeletons.get('infant_smil25').keypoints,
                    skeletons.get('infant_smil25').sigmas))
  assert infant['left_hip'] == .107 and infant['nose'] == .026 and infant['left_toe'] == .068
  assert infant['spine2'] == .107 and infant['neck'] == .079 and infant['right_hand_tip'] == .062
  chair = dict(zip(skeletons.get('wheelchair23').keypoints, skeletons.get('wheelchair23').sigmas))
  assert chair['left_rear_wheel_hub'] == .107 and chair['right_footrest'] == .089
  assert set(skeletons.get('aggpose21').sigmas) == {0.05}


@pytest.mark.parametrize('name', sorted(BUILTIN_SIZES))
def test_builtin_flip_pairs_are_symmetric_and_pair_every_side_marked_name(name):
  s = skeletons.get(name)
  perm = s.flip_index
  assert all(perm[perm[i]] == i for i in range(s.num_keypoints))
  assert skeletons.unpaired_side_names(s.keypoints, s.flip_pairs) == ()


def test_wholebody_parts_and_flip_pairs():
  wb = skeletons.get('coco_wholebody133')
  assert [(p, a, b) for p, a, b in wb.parts] == [
      ('body', 0, 17), ('foot', 17, 23), ('face', 23, 91), ('lefthand', 91, 112),
      ('righthand', 112, 133)]
  assert len(wb.flip_pairs) == 61
  # The face's left/right cannot be read from names: the jaw's ends must still swap.
  assert wb.flip_index[23] == 23 + 16
  assert wb.flip_index[91] == 112


def test_infant_names_are_anatomical_and_keep_the_source_order():
  s = skeletons.get('infant_smil25')
  assert s.source_names[1] == 'leftThigh' and s.keypoints[1] == 'left_hip'
  assert s.source_names[16] == 'leftUpperArm' and s.keypoints[16] == 'left_shoulder'
  assert s.head_segment == ('head', 'neck')


def test_name_mapping_between_infant_and_coco_finds_the_shared_joints():
  pairs = skeletons.keypoint_mapping(skeletons.get('infant_smil25'), skeletons.get('coco17'))
  coco = skeletons.get('coco17')
  infant = skeletons.get('infant_smil25')
  names = {infant.keypoints[i] for i, _ in pairs}
  assert names == {'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
                   'right_ankle', 'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
                   'left_wrist', 'right_wrist', 'nose'}
  assert all(infant.keypoints[i] == coco.keypoints[j] for i, j in pairs)
  wb_pairs = skeletons.keypoint_mapping(skeletons.get('coco_wholebody133'), coco)
  assert wb_pairs == tuple((i, i) for i in range(17))


def _base(**kw):
  fields = dict(name='toy', keypoints=['nose', 'left_eye', 'right_eye'], sigmas=[.1, .1, .1])
  fields.update(kw)
  return fields


@pytest.mark.parametrize('fields, problem', [
    (_base(keypoints=['nose', 'left_eye', 'nose']), "duplicate keypoint name 'nose'"),
    (_base(flip_pairs=[(1, 5)]), 'flip pair (1, 5) is out of range for 3 keypoints'),
    (_base(flip_pairs=[(0, 1), (1, 2)]), 'flip pairs are not symmetric'),
    (_base(sigmas=[.1, .1]), '2 sigmas for 3 keypoints'),
    (_base(links=[('nose', 'chin')]), "link ('nose', 'chin') names unknown keypoint 'chin'"),
])
def test_schema_errors_name_the_schema_and_the_problem(fields, problem):
  with pytest.raises(SchemaError) as e:
    make_schema(**fields)
  assert "schema 'toy'" in str(e.value)
  assert problem in str(e.value)


def test_user_schema_round_trips_through_json(tmp_path):
  original = make_schema(
      'my_rig', ['head', 'left_hand', 'right_hand', 'left_foot', 'right_foot'],
      [.05, .06, .06, .08, .08], links=[('head', 'left_hand'), ('head', 'right_hand')],
      head_segment=('head', 'left_hand'), sigma_note='made up for a test')
  path = tmp_path / 'my_rig.json'
  path.write_text(json.dumps(original.to_dict()))
  loaded = skeletons.get(str(path))
  assert loaded == original
  assert loaded.flip_pairs == ((1, 2), (3, 4))
  assert loaded.lower_body_ids == (3, 4)


def test_minimal_user_schema_derives_the_rest(tmp_path):
  path = tmp_path / 's.json'
  path.write_text(json.dumps(_base()))
  s = skeletons.load_schema_json(path)
  assert s.flip_pairs == ((1, 2),)
  assert s.joint_weights == (1.0, 1.0, 1.0)


def test_user_schema_file_errors_name_the_file_and_field(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps(_base(sigma=[1])))
  with pytest.raises(SchemaError, match=r"bad\.json.*unknown field\(s\) \['sigma'\]"):
    skeletons.get(str(path))
  path.write_text(json.dumps(_base(sigmas=[.1])))
  with pytest.raises(SchemaError, match=r"bad\.json: schema 'toy': 1 sigmas for 3 keypoints"):
    skeletons.get(str(path))


def test_unknown_schema_name_lists_the_known_ones():
  with pytest.raises(SchemaError, match='unknown schema .coco18.*coco17'):
    skeletons.get('coco18')


def test_registering_a_different_schema_under_a_taken_name_needs_overwrite():
  with pytest.raises(SchemaError, match='already registered'):
    skeletons.register(make_schema('coco17', ['a'], [.1]))
  assert skeletons.get('coco17').num_keypoints == 17


def test_cli_prints_a_schema_as_json_that_loads_back():
  out = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons', 'wheelchair23', '--json'],
                       check=True, capture_output=True, text=True).stdout
  assert skeletons.schema_from_dict(json.loads(out)) == skeletons.get('wheelchair23')
  listing = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons'], check=True,
                           capture_output=True, text=True).stdout
  assert all(name in listing for name in BUILTIN_SIZES)
  bad = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons', 'nope'],
                       capture_output=True, text=True)
  assert bad.returncode == 2 and "unknown schema 'nope'" in bad.stderr
