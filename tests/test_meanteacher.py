"""Mean teacher: the EMA update, the teacher→student heatmap mapping, soft-argmax and the
silhouette penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitpose_jax import codec
from vitpose_jax.adapt import keypoints as kp
from vitpose_jax.adapt import meanteacher as mt

INPUT, HEATMAP = (128, 96), (32, 24)


def test_ema_update_is_exact():
  rng = np.random.default_rng(0)
  teacher = {'a': rng.normal(size=(3, 4)).astype(np.float32), 'b': {'c': np.float32(2.0)}}
  student = {'a': rng.normal(size=(3, 4)).astype(np.float32), 'b': {'c': np.float32(-1.0)}}
  out = mt.ema_update(teacher, student, 0.75)
  # 0.75 and 0.25 are exact in binary, so the float32 result is the exact one.
  np.testing.assert_array_equal(out['a'], 0.75 * teacher['a'] + 0.25 * student['a'])
  assert float(out['b']['c']) == 0.75 * 2.0 + 0.25 * -1.0
  # n steps toward a fixed student close the gap by decay**n.
  t = {'a': np.zeros(2, np.float32)}
  for _ in range(10):
    t = mt.ema_update(t, {'a': np.ones(2, np.float32)}, 0.9)
  np.testing.assert_allclose(t['a'], 1 - 0.9**10, rtol=1e-6)


def _peak(heatmap: np.ndarray) -> np.ndarray:
  """Sub-pixel (x, y) of a single Gaussian blob: the centroid of the map above 10% of its peak."""
  h = np.where(heatmap > 0.1 * heatmap.max(), heatmap, 0.0)
  ys, xs = np.mgrid[:h.shape[0], :h.shape[1]]
  return np.array([(h * xs).sum(), (h * ys).sum()]) / h.sum()


def _affine(angle: float, scale: float, shift, flip_width: int | None = None) -> np.ndarray:
  c, s = np.cos(np.deg2rad(angle)) * scale, np.sin(np.deg2rad(angle)) * scale
  m = np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1.0]])
  if flip_width is not None:
    m = m @ np.array([[-1.0, 0, flip_width - 1], [0, 1, 0], [0, 0, 1]])
  return m


@pytest.mark.parametrize('weak_flip,strong_flip', [(False, False), (True, False),
                                                   (False, True), (True, True)])
def test_mapping_puts_the_peak_where_the_affine_does(weak_flip, strong_flip):
  # Two crops of one image: each view is image → crop, mirrored first where that view is flipped.
  width = 300
  weak = _affine(8.0, 0.5, (-40.0, -30.0), width if weak_flip else None)
  strong = _affine(-15.0, 0.62, (-60.0, 20.0), width if strong_flip else None)
  view = strong @ np.linalg.inv(weak)
  flip_index = [1, 0, 2]
  point = np.array([150.0, 140.0, 1.0])  # the joint in the image
  weak_xy = (weak @ point)[:2]
  # In a mirrored view the joint is labelled as its left/right partner.
  channels = np.zeros((3, 2))
  channels[flip_index[0] if weak_flip else 0] = weak_xy
  keypoints = jnp.asarray(channels[None], jnp.float32)
  weights = jnp.array([[1.0, 0.0, 0.0]]) if not weak_flip else jnp.array([[0.0, 1.0, 0.0]])
  teacher, _ = codec.udp_targets(keypoints, weights, image_size=INPUT, heatmap_size=HEATMAP,
                                 sigma=2.0)
  transform = mt.crop_to_heatmap_transform(jnp.asarray(view[None], jnp.float32),
                                           input_size=INPUT, heatmap_size=HEATMAP)
  flip = np.float32(weak_flip != strong_flip)
  mapped = np.asarray(mt.map_heatmaps(teacher, transform, jnp.array([flip]), flip_index))[0]
  expected_channel = flip_index[0] if strong_flip else 0
  assert mapped[..., expected_channel].max() > 0.5
  for c in range(3):
    if c != expected_channel:
      assert mapped[..., c].max() == 0.0
  expected = np.asarray(transform[0]) @ np.array(
      [*(weak_xy * np.array([(HEATMAP[1] - 1) / (INPUT[1] - 1),
                             (HEATMAP[0] - 1) / (INPUT[0] - 1)])), 1.0])
  np.testing.assert_allclose(_peak(mapped[..., expected_channel]), expected[:2], atol=0.1)


def test_confident_joints_and_consistency_loss():
  mapped = jnp.zeros((1, 8, 6, 2)).at[0, 4, 3, 0].set(0.9).at[0, 4, 3, 1].set(0.2)
  np.testing.assert_array_equal(mt.confident_joints(mapped, 0.5), [[1.0, 0.0]])
  student = jnp.ones_like(mapped)
  loss, frac = mt.consistency_loss(student, mapped, 0.5)
  # Only channel 0 counts: its squared error summed over pixels, over all pixels and channels.
  expected = float(jnp.sum(jnp.square(1.0 - mapped[..., 0]))) / mapped.size
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(frac) == 0.5
  grad = jax.grad(lambda m: mt.consistency_loss(student, m, 0.5)[0])(mapped)
  assert float(jnp.abs(grad).max()) == 0.0  # nothing reaches the teacher


def test_soft_argmax_finds_a_subpixel_peak():
  points = jnp.array([[[7.3, 20.6], [15.0, 3.25]]])
  heatmaps, _ = codec.udp_targets(
      kp.heatmap_to_input(points, input_size=INPUT, heatmap_size=HEATMAP), jnp.ones((1, 2)),
      image_size=INPUT, heatmap_size=HEATMAP, sigma=2.0)
  found = kp.soft_argmax(heatmaps, beta=20.0)
  np.testing.assert_allclose(found, points, atol=0.05)
  # Scaling a map (a less confident model) does not move its position.
  np.testing.assert_allclose(kp.soft_argmax(0.2 * heatmaps, beta=20.0), found, atol=1e-5)


def test_silhouette_penalty_zero_inside_and_growing_outside():
  from scipy import ndimage

  mask = np.zeros((128, 96), bool)
  mask[30:90, 20:60] = True
  distance = ndimage.distance_transform_edt(~mask).astype(np.float32)[None]
  weight = jnp.ones((1,))

  def penalty(x, y):
    return float(kp.silhouette_penalty(jnp.array([[[x, y]]], jnp.float32), distance, weight))

  assert penalty(40.0, 60.0) == 0.0
  assert penalty(20.0, 30.0) == 0.0  # a corner pixel of the mask
  outside = [penalty(60.0 + d, 60.0) for d in (2.0, 5.0, 10.0, 20.0)]
  assert 0 < outside[0] < outside[1] < outside[2] < outside[3]
  assert outside[2] == pytest.approx(11.0 / 128, rel=1e-5)  # 11 px right of the last mask column
  grad = jax.grad(lambda p: kp.silhouette_penalty(p, distance, weight))(
      jnp.array([[[75.0, 60.0]]]))
  # Right of the mask the penalty rises with x, so a descent step moves the point back left.
  assert float(grad[0, 0, 0]) > 0
  # A sample without a mask contributes nothing.
  assert float(kp.silhouette_penalty(jnp.array([[[90.0, 5.0]]]), distance, jnp.zeros((1,)))) == 0


class _ConstantPrior:
  """A prior whose negative log-likelihood is a fixed value per pose."""

  def __init__(self, values):
    self.values = jnp.asarray(values, jnp.float32)

  def nll(self, keypoints):
    return self.values + 0.0 * keypoints.sum(axis=(-1, -2))


def test_the_prior_term_penalises_only_poses_beyond_the_margin():
  heatmaps, _ = codec.udp_targets(jnp.full((2, 3, 2), 40.0), jnp.ones((2, 3)),
                                  image_size=INPUT, heatmap_size=HEATMAP, sigma=2.0)
  batch = {'view_transform': jnp.tile(jnp.eye(3), (2, 1, 1)), 'view_flip': jnp.zeros(2)}
  mt_ = mt.MeanTeacher(target='t', model_task='t', decay=0.9, threshold=0.5,
                       consistency_weight=1.0, flip_index=(0, 1, 2), input_size=INPUT,
                       heatmap_size=HEATMAP, prior=_ConstantPrior([3.0, 10.0]), prior_weight=0.5,
                       prior_margin=4.0)
  total, terms = mt_.losses(heatmaps, heatmaps, batch)
  # Only the second pose is beyond the margin, by 6 nats: a mean of (0 + 6) / 2.
  assert float(terms['prior']) == pytest.approx(3.0)
  assert float(total) == pytest.approx(0.5 * 3.0 + float(terms['consistency']))
