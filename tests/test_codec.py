"""UDP heatmap targets and the heatmap MSE loss against mmpose 0.x semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitpose_jax import codec

IMAGE = (256, 192)
HEATMAP = (64, 48)
CODEC = codec.UDPHeatmap(IMAGE, HEATMAP)  # ViTPose's: σ 2, blur kernel 11
STRIDE = np.array([(IMAGE[1] - 1) / (HEATMAP[1] - 1), (IMAGE[0] - 1) / (HEATMAP[0] - 1)])  # x, y


def mmpose_udp(keypoints, image_size=IMAGE, heatmap_size=HEATMAP, sigma=2):
  """mmpose 0.x ``_udp_generate_target`` (GaussianHeatmap) transcribed loop for loop, on (K, 3)
  [x, y, w]; returns (h, w, K) maps and (K,) weights."""
  hm_w, hm_h = heatmap_size[1], heatmap_size[0]
  feat_stride = (np.array([image_size[1], image_size[0]]) - 1.0) / (np.array([hm_w, hm_h]) - 1.0)
  target = np.zeros((len(keypoints), hm_h, hm_w), np.float32)
  weight = keypoints[:, 2].astype(np.float32).copy()
  tmp_size = sigma * 3
  size = 2 * tmp_size + 1
  x = np.arange(0, size, 1, np.float32)
  y = x[:, None]
  for k, (kx, ky, _) in enumerate(keypoints):
    mu_x, mu_y = int(kx / feat_stride[0] + 0.5), int(ky / feat_stride[1] + 0.5)
    ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
    br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
    if ul[0] >= hm_w or ul[1] >= hm_h or br[0] < 0 or br[1] < 0:
      weight[k] = 0
      continue
    x0 = y0 = size // 2
    x0 += kx / feat_stride[0] - mu_x
    y0 += ky / feat_stride[1] - mu_y
    g = np.exp(-((x - x0)**2 + (y - y0)**2) / (2 * sigma**2))
    g_x = max(0, -ul[0]), min(br[0], hm_w) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], hm_h) - ul[1]
    img_x = max(0, ul[0]), min(br[0], hm_w)
    img_y = max(0, ul[1]), min(br[1], hm_h)
    if weight[k] > 0.5:
      target[k][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
  return target.transpose(1, 2, 0), weight


def subpixel_peak(heatmap):
  """(x, y) of a Gaussian's peak from its maximum pixel and the log of its two neighbours per
  axis: the log of a Gaussian is a parabola, so the three-point vertex is exact."""
  row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)

  def vertex(left, centre, right):
    a, b, c = np.log([left, centre, right])
    return 0.5 * (a - c) / (a - 2 * b + c)

  return (col + vertex(*heatmap[row, col - 1:col + 2]),
          row + vertex(*heatmap[row - 1:row + 2, col]))


def test_peak_at_subpixel_keypoint():
  rng = np.random.default_rng(0)
  xy = rng.uniform([8, 8], [IMAGE[1] - 9, IMAGE[0] - 9], size=(17, 2))
  heatmaps, weights = CODEC.encode(xy.astype(np.float32), np.ones(17, np.float32))
  heatmaps = np.asarray(heatmaps)
  np.testing.assert_array_equal(weights, 1.0)
  for k in range(17):
    np.testing.assert_allclose(subpixel_peak(heatmaps[..., k]), xy[k] / STRIDE, atol=0.05)
    assert heatmaps[..., k].max() <= 1.0


def test_udp_scale_maps_corner_centres_onto_each_other():
  corners = np.array([[0, 0, 1], [IMAGE[1] - 1, IMAGE[0] - 1, 1]], np.float32)
  heatmaps, _ = CODEC.encode(corners[:, :2], corners[:, 2])
  assert heatmaps[0, 0, 0] == 1.0
  assert heatmaps[HEATMAP[0] - 1, HEATMAP[1] - 1, 1] == 1.0


def test_matches_mmpose_loop_including_borders():
  rng = np.random.default_rng(1)
  # Spread well past the crop so the overlap rule and window truncation at every edge are hit.
  xy = rng.uniform([-40, -40], [IMAGE[1] + 40, IMAGE[0] + 40], size=(200, 2))
  w = (rng.random((200, 1)) > 0.2).astype(np.float32)
  keypoints = np.concatenate([xy, w], axis=1).astype(np.float32)
  heatmaps, weights = CODEC.encode(keypoints[:, :2], keypoints[:, 2])
  ref_maps, ref_weights = mmpose_udp(keypoints)
  np.testing.assert_array_equal(weights, ref_weights)
  np.testing.assert_allclose(heatmaps, ref_maps, atol=1e-5)


@pytest.mark.parametrize('x, y, expect', [
    (100.0, 120.0, 1.0),  # inside
    (-10.0, 120.0, 1.0),  # left of the crop, within the 3σ window
    (120.0, IMAGE[0] + 20.0, 1.0),  # below the crop, within the 3σ window
    (-40.0, 120.0, 0.0),  # far left
    (IMAGE[1] + 40.0, 120.0, 0.0),  # far right
    (100.0, -60.0, 0.0),  # far above
])
def test_overlap_rule_at_the_borders(x, y, expect):
  heatmaps, weights = CODEC.encode(np.array([[x, y]], np.float32), np.ones(1, np.float32))
  assert float(weights[0]) == expect
  assert (float(heatmaps.max()) > 0) == bool(expect)


def test_unlabelled_keypoint_has_no_map():
  heatmaps, weights = CODEC.encode(np.array([[100.0, 120.0]], np.float32), np.zeros(1, np.float32))
  assert float(weights[0]) == 0.0
  assert float(jnp.abs(heatmaps).max()) == 0.0


def test_batched_shapes_sizes_and_jit():
  keypoints = np.random.default_rng(2).uniform(0, 100, size=(2, 3, 5, 3)).astype(np.float32)
  keypoints[..., 2] = 1.0
  fn = jax.jit(lambda k, w: codec.udp_targets(k, w, image_size=(128, 96), heatmap_size=(32, 24),
                                              sigma=1.0))
  heatmaps, weights = fn(keypoints[..., :2], keypoints[..., 2])
  assert heatmaps.shape == (2, 3, 32, 24, 5) and heatmaps.dtype == jnp.float32
  assert weights.shape == (2, 3, 5) and weights.dtype == jnp.float32
  single, _ = codec.udp_targets(keypoints[1, 2, :, :2], keypoints[1, 2, :, 2],
                                image_size=(128, 96), heatmap_size=(32, 24), sigma=1.0)
  np.testing.assert_allclose(heatmaps[1, 2], single, atol=1e-6)


def mmpose_joints_mse(pred, target, weights):
  """mmpose 0.x ``JointsMSELoss(use_target_weight=True)`` on NCHW arrays, loop for loop."""
  n, k = pred.shape[:2]
  pred, target = pred.reshape(n, k, -1), target.reshape(n, k, -1)
  loss = 0.0
  for idx in range(k):
    w = weights[:, idx, None]
    loss += np.mean((pred[:, idx] * w - target[:, idx] * w) ** 2)
  return loss / k


def test_joints_mse_matches_mmpose():
  rng = np.random.default_rng(3)
  pred = rng.normal(size=(4, 16, 12, 17)).astype(np.float32)
  target = rng.random((4, 16, 12, 17)).astype(np.float32)
  weights = (rng.random((4, 17)) > 0.3).astype(np.float32)
  joint_weights = rng.uniform(1, 1.5, 17)
  to_nchw = lambda a: a.transpose(0, 3, 1, 2)
  np.testing.assert_allclose(
      codec.joints_mse(pred, target, weights),
      mmpose_joints_mse(to_nchw(pred), to_nchw(target), weights), rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(codec.joints_mse)(pred, target, weights, joint_weights),
      mmpose_joints_mse(to_nchw(pred), to_nchw(target), weights * joint_weights), rtol=1e-5)


def test_the_codec_record_checks_its_fields_and_round_trips():
  assert CODEC == codec.UDPHeatmap((256, 192), (64, 48), sigma=2.0, blur_kernel_size=11)
  assert codec.UDPHeatmap.from_dict(CODEC.to_dict()) == CODEC
  hashable = {CODEC: 'a jit static argument'}
  assert hashable[codec.UDPHeatmap([256, 192], [64, 48])] == 'a jit static argument'
  for fields, message in [(dict(input_size=(256,)), 'input_size'),
                          (dict(heatmap_size=(64, 1)), 'heatmap_size'),
                          (dict(sigma=float('nan')), 'sigma'),
                          (dict(blur_kernel_size=0), 'blur_kernel_size')]:
    with pytest.raises(ValueError, match=f'codec {message}'):
      codec.UDPHeatmap(**{'input_size': IMAGE, 'heatmap_size': HEATMAP, **fields})
  with pytest.raises(ValueError, match=r"codec: missing field\(s\) \['heatmap_size'\]"):
    codec.UDPHeatmap.from_dict({'type': 'UDPHeatmap', 'input_size': [256, 192]})


def test_encode_uses_the_records_sigma():
  keypoints = np.array([[96.0, 128.0, 1.0]], np.float32)
  for sigma in (1.0, 3.0):
    heatmaps, _ = codec.UDPHeatmap(IMAGE, HEATMAP, sigma=sigma).encode(keypoints[:, :2],
                                                                    keypoints[:, 2])
    want, _ = mmpose_udp(keypoints, sigma=sigma)
    np.testing.assert_allclose(heatmaps, want, atol=1e-6)
