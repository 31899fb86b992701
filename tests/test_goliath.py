"""The goliath308 built-in: Sapiens' Goliath-308 keypoints (its datasets/goliath.py)."""

import json
import subprocess
import sys
import warnings

from vitpose_jax import skeletons
from vitpose_jax.skeletons import builtin

# COCO-17 in Goliath's order: the wrists sit after each hand's 20 points.
COCO17_IN_GOLIATH = [0, 1, 2, 3, 4, 5, 6, 7, 8, 62, 41, 9, 10, 11, 12, 13, 14]
SELF_PAIRED = {
    'nose', 'neck', 'center_of_glabella', 'center_of_nose_root', 'tip_of_nose_bridge',
    'midpoint_1_of_nose_bridge', 'midpoint_2_of_nose_bridge', 'midpoint_3_of_nose_bridge',
    'center_of_labiomental_groove', 'tip_of_chin', 'tip_of_nose', 'bottom_center_of_nose',
    'center_of_cupid_bow', 'center_of_lower_outer_lip', 'center_of_upper_inner_lip',
    'center_of_lower_inner_lip',
}
_SIDE = {'left': 'left', 'l': 'left', 'right': 'right', 'r': 'right'}


def _sides(name):
  """Goliath's side words, wherever they sit: left_eye, l_center_of_pupil, end_of_r_eyebrow."""
  return {_SIDE[w] for w in name.split('_') if w in _SIDE}


def test_counts_and_groups():
  g = skeletons.get('goliath308')
  assert g.num_keypoints == 308 and len(set(g.keypoints)) == 308
  assert g.joint_weights == (1.0,) * 308
  assert [(p, b - a) for p, a, b in g.parts] == [
      ('body', 15), ('feet', 6), ('right_hand', 21), ('left_hand', 21), ('extra', 7),
      ('face', 238)]
  assert g.keypoints[41] == 'right_wrist' and g.keypoints[62] == 'left_wrist'
  groups = builtin._goliath_record()['groups']
  assert {k: len(v) for k, v in groups.items()} == {
      'body': 17, 'foot': 6, 'right_hand': 20, 'left_hand': 20, 'extra': 7, 'face': 238}
  assert sorted(n for v in groups.values() for n in v) == sorted(g.keypoints)
  assert g.keypoints[g.part('face')] == tuple(groups['face'])
  assert not any(n.startswith('teeth_') for n in g.keypoints)


def test_mapping_to_coco17_and_wholebody_by_name():
  g = skeletons.get('goliath308')
  coco = skeletons.keypoint_mapping(skeletons.get('coco17'), g)
  assert coco == tuple(enumerate(COCO17_IN_GOLIATH))
  assert [g.index(n) for n in builtin._goliath_record()['groups']['body']] == COCO17_IN_GOLIATH
  wb = skeletons.keypoint_mapping(skeletons.get('coco_wholebody133'), g)
  assert len(wb) == 53
  # Sapiens' coco_wholebody_to_goliath_mapping: feet 17-22 -> 15-20, right thumb tip 116 -> 21.
  assert dict(wb)[17] == 15 and dict(wb)[116] == 21 and dict(wb)[9] == 62
  # The 1st finger joints and hand roots are Goliath's third joints and wrists: no name match.
  assert 'left_thumb1' not in g.keypoints and 'left_hand_root' not in g.keypoints


def test_flip_pairs_are_sapiens_swaps():
  g = skeletons.get('goliath308')
  perm = g.flip_index
  assert all(perm[perm[i]] == i for i in range(308))
  fixed = {g.keypoints[i] for i in range(308) if perm[i] == i}
  assert fixed == SELF_PAIRED and len(fixed) == 16
  assert len(g.flip_pairs) == (308 - 16) // 2
  for i, j in enumerate(perm):
    a, b = g.keypoints[i], g.keypoints[j]
    if i == j:
      assert not _sides(a), a
    elif _sides(a):
      # A side word swaps with the other side; the rest may differ (contour numbering mirrors).
      assert _sides(a) | _sides(b) == {'left', 'right'} and _sides(a) != _sides(b), (a, b)
  # Body, feet, hands and extras pair by name; the face's contours pair across numbers.
  for i in range(70):
    a, b = g.keypoints[i], g.keypoints[perm[i]]
    assert a == b or a.replace('left', 'right') == b or a.replace('right', 'left') == b, (a, b)
  assert perm[g.index('l_border_of_iris_3')] == g.index('r_border_of_iris_9')
  assert perm[g.index('midpoint_1_of_upper_outer_lip')] == g.index('midpoint_2_of_upper_outer_lip')
  assert skeletons.unpaired_side_names(g.keypoints, g.flip_pairs) == ()


def test_links_sigmas_colours_and_half_body():
  g = skeletons.get('goliath308')
  assert len(g.links) == 65 and len(g.link_colors) == 65
  assert ('left_wrist', 'left_thumb_third_joint') in g.links
  assert all(s > 0 for s in g.sigmas)
  assert set(g.sigmas[g.part('face')]) == {0.010}
  sig = dict(zip(g.keypoints, g.sigmas))
  coco = skeletons.get('coco17')
  assert all(sig[n] == s for n, s in zip(coco.keypoints, coco.sigmas))
  assert sig['neck'] == .079 and sig['left_olecranon'] == .072
  assert sig['right_thumb_third_joint'] == .022 and sig['right_thumb4'] == .047
  assert g.keypoint_colors[0] == (51, 153, 255)
  assert sorted(g.keypoints[i] for i in g.lower_body_ids) == sorted(
      f'{s}_{p}' for s in ('left', 'right')
      for p in ('hip', 'knee', 'ankle', 'big_toe', 'small_toe', 'heel'))
  assert sorted(g.upper_body_ids + g.lower_body_ids) == list(range(308))
  assert g.head_segment is None
  assert 'sapiens' in g.sigma_note and 'CC BY-NC 4.0' in g.sigma_note


def test_builds_without_warnings_and_round_trips():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    g = builtin.goliath308()
  assert skeletons.schema_from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_cli_prints_it():
  out = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons', 'goliath308'],
                       capture_output=True, text=True, check=True).stdout
  assert out.startswith('goliath308: 308 keypoints, 146 flip pairs, 65 links')
  assert 'l_border_of_iris_3/r_border_of_iris_9' in out
  listing = subprocess.run([sys.executable, '-m', 'vitpose_jax.skeletons'],
                           capture_output=True, text=True, check=True).stdout
  assert 'goliath308' in listing
