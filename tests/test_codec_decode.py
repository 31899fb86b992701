"""DARK-UDP decoding, the crop → image back-transform and the flip test, against mmpose 0.x."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from vitpose_jax import codec, skeletons
from vitpose_jax.data import transforms

IMAGE = (256, 192)
HEATMAP = (64, 48)
CODEC = codec.UDPHeatmap(IMAGE, HEATMAP)
FLIP_INDEX = skeletons.get('coco17').flip_index


def gaussian_maps(centres, size=HEATMAP, sigma=2.0):
  """(h, w, K) untruncated Gaussians of peak 1 at (K, 2) (x, y) heatmap positions."""
  rows, cols = np.mgrid[:size[0], :size[1]]
  d2 = (cols[..., None] - centres[:, 0])**2 + (rows[..., None] - centres[:, 1])**2
  return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


def cv2_kernel(size):
  """``cv2.getGaussianKernel(size, 0)``: OpenCV's fixed binomial table up to size 7, else the
  sampled Gaussian with sigma 0.3·((size − 1)·0.5 − 1) + 0.8."""
  if size == 3:
    return np.array([0.25, 0.5, 0.25])
  sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
  g = np.exp(-(np.arange(size) - size // 2)**2 / (2 * sigma**2))
  return g / g.sum()


def reference_decode(heatmaps, kernel=11):
  """mmpose 0.x ``_get_max_preds`` + ``post_dark_udp`` transcribed on (N, h, w, K) maps, with
  cv2.GaussianBlur (default border BORDER_REFLECT_101) as scipy's ``mirror`` mode; returns
  (N, K, 2) coordinates and (N, K) maxima."""
  batch = np.ascontiguousarray(heatmaps.transpose(0, 3, 1, 2), np.float32)
  n, k, h, w = batch.shape
  flat = batch.reshape(n, k, -1)
  idx = np.argmax(flat, 2).reshape(n, k, 1)
  maxvals = np.amax(flat, 2).reshape(n, k, 1)
  coords = np.tile(idx, (1, 1, 2)).astype(np.float32)
  coords[:, :, 0] = coords[:, :, 0] % w
  coords[:, :, 1] = coords[:, :, 1] // w
  coords = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, coords, -1)

  g = cv2_kernel(kernel)
  batch = ndimage.convolve1d(batch, g, axis=2, mode='mirror')
  batch = ndimage.convolve1d(batch, g, axis=3, mode='mirror')
  batch = np.log(np.clip(batch, 0.001, 50))
  pad = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode='edge').flatten()
  index = coords[..., 0] + 1 + (coords[..., 1] + 1) * (w + 2)
  index += (w + 2) * (h + 2) * np.arange(0, n * k).reshape(-1, k)
  index = index.astype(int).reshape(-1, 1)
  i_ = pad[index]
  ix1, iy1, ix1y1 = pad[index + 1], pad[index + w + 2], pad[index + w + 3]
  ix1_y1_, ix1_, iy1_ = pad[index - w - 3], pad[index - 1], pad[index - 2 - w]
  dx, dy = 0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)
  derivative = np.concatenate([dx, dy], axis=1).reshape(n, k, 2, 1)
  dxx = ix1 - 2 * i_ + ix1_
  dyy = iy1 - 2 * i_ + iy1_
  dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
  hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(n, k, 2, 2)
  hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
  coords -= np.einsum('ijmn,ijnk->ijmk', hessian, derivative)[..., 0]
  return coords, maxvals[..., 0]


def reference_transform_preds(coords, center, scale, output_size):
  """mmpose 0.x ``transform_preds(..., use_udp=True)`` with ``scale`` already in pixels;
  ``output_size`` is the heatmap (w, h)."""
  scale_x = scale[0] / (output_size[0] - 1.0)
  scale_y = scale[1] / (output_size[1] - 1.0)
  out = np.ones_like(coords)
  out[:, 0] = coords[:, 0] * scale_x + center[0] - scale[0] * 0.5
  out[:, 1] = coords[:, 1] * scale_y + center[1] - scale[1] * 0.5
  return out


def random_crop_keypoints(rng, n):
  """(n, 3) [x, y, 1] sub-pixel keypoints at least 25 crop pixels (≈ 6 heatmap pixels) inside the
  input crop: nearer the border the blur's reflection biases DARK-UDP, in the reference too."""
  xy = rng.uniform([25, 25], [IMAGE[1] - 26, IMAGE[0] - 26], size=(n, 2))
  return np.concatenate([xy, np.ones((n, 1))], axis=1).astype(np.float32)


# ---- decode_heatmaps -------------------------------------------------------------------------


def test_decodes_subpixel_gaussians_in_heatmap_pixels():
  rng = np.random.default_rng(0)
  centres = rng.uniform([6, 6], [HEATMAP[1] - 7, HEATMAP[0] - 7], size=(17, 2))
  coords, scores = codec.decode_heatmaps(gaussian_maps(centres), blur_kernel_size=11)
  np.testing.assert_allclose(coords, centres, atol=0.05)
  assert coords.dtype == jnp.float32 and coords.shape == (17, 2) and scores.shape == (17,)


def test_udp_targets_round_trip_within_0_05_crop_pixels():
  rng = np.random.default_rng(1)
  keypoints = random_crop_keypoints(rng, 4 * 17).reshape(4, 17, 3)
  heatmaps, _ = CODEC.encode(keypoints[..., :2], keypoints[..., 2])
  crop, _ = CODEC.decode(heatmaps)
  np.testing.assert_allclose(crop, keypoints[..., :2], atol=0.05)


def test_scores_are_the_maxima_before_blurring():
  rng = np.random.default_rng(2)
  maps = rng.uniform(0, 1, size=(2, *HEATMAP, 5)).astype(np.float32)
  _, scores = codec.decode_heatmaps(maps, blur_kernel_size=11)
  np.testing.assert_array_equal(scores, maps.max(axis=(1, 2)))


def test_void_maps_keep_their_argmax():
  maps = np.zeros((*HEATMAP, 3), np.float32)
  maps[..., 1] = -1.0
  maps[7, 5, 1] = -0.5
  maps[20, 30, 2] = 1.0
  maps[20, 31, 2] = 0.5
  coords, scores = codec.decode_heatmaps(maps, blur_kernel_size=11)
  np.testing.assert_array_equal(coords[0], [0.0, 0.0])
  np.testing.assert_array_equal(coords[1], [5.0, 7.0])
  np.testing.assert_array_equal(scores, [0.0, -0.5, 1.0])
  # A real peak is still refined: towards its brighter right neighbour.
  assert 30.0 < coords[2, 0] < 31.0


@pytest.mark.parametrize('kernel', [3, 11, 17])
def test_matches_reference_post_dark_udp(kernel):
  """Random smooth maps: a floor, a few broad bumps anywhere (peaks on the border included, where
  the edge padding and the blur's reflection matter) and mild noise."""
  rng = np.random.default_rng(kernel)
  n, k = 3, 17
  maps = np.full((n, *HEATMAP, k), 0.02, np.float32)
  rows, cols = np.mgrid[:HEATMAP[0], :HEATMAP[1]]
  for _ in range(3):
    cx = rng.uniform(-3, HEATMAP[1] + 2, size=(n, 1, 1, k))
    cy = rng.uniform(-3, HEATMAP[0] + 2, size=(n, 1, 1, k))
    sigma = rng.uniform(1.5, 4, size=(n, 1, 1, k))
    amp = rng.uniform(0.2, 1, size=(n, 1, 1, k))
    maps += amp * np.exp(-((cols[..., None] - cx)**2 + (rows[..., None] - cy)**2) / (2 * sigma**2))
  maps += rng.uniform(0, 0.01, size=maps.shape)
  maps = maps.astype(np.float32)
  want, want_scores = reference_decode(maps, kernel)
  coords, scores = codec.decode_heatmaps(maps, blur_kernel_size=kernel)
  np.testing.assert_allclose(coords, want, atol=1e-4)
  np.testing.assert_array_equal(scores, want_scores)
  # The step is not vacuous: the refinement moved the points off the pixel grid.
  assert np.abs(want - np.round(want)).max() > 0.1


def test_rejects_even_blur_kernel():
  with pytest.raises(ValueError, match='odd'):
    codec.decode_heatmaps(np.ones((*HEATMAP, 1), np.float32), blur_kernel_size=4)


def test_jit_on_batched_inputs():
  rng = np.random.default_rng(3)
  # Smooth maps: on noise the Hessian is near singular and XLA's fused float32 arithmetic alone
  # moves the Newton step by ~1e-3.
  centres = rng.uniform([6, 6], [HEATMAP[1] - 7, HEATMAP[0] - 7], size=(6, 17, 2))
  maps = np.stack([gaussian_maps(c) for c in centres]).reshape(2, 3, *HEATMAP, 17)
  decode = jax.jit(codec.decode_heatmaps, static_argnames='blur_kernel_size')
  coords, scores = decode(jnp.asarray(maps), blur_kernel_size=11)
  assert coords.shape == (2, 3, 17, 2) and scores.shape == (2, 3, 17)
  for i in range(2):
    for j in range(3):
      one, one_scores = codec.decode_heatmaps(maps[i, j], blur_kernel_size=11)
      np.testing.assert_allclose(coords[i, j], one, atol=1e-5)
      np.testing.assert_array_equal(scores[i, j], one_scores)


# ---- back to the image -----------------------------------------------------------------------


def random_crops(rng, n):
  """n crops: centres, (w, h) scales at the model's 3:4 aspect, rotations in degrees."""
  center = rng.uniform(100, 500, size=(n, 2))
  height = rng.uniform(80, 400, size=n)
  scale = np.stack([height * IMAGE[1] / IMAGE[0], height], axis=1)
  return center, scale, rng.uniform(-40, 40, size=n)


def test_crop_to_image_inverts_the_warp():
  rng = np.random.default_rng(4)
  center, scale, rotation = random_crops(rng, 6)
  points = rng.uniform(0, 640, size=(6, 17, 2))
  crop = np.stack([
      transforms.warp_points(points[i], transforms.udp_warp_matrix(
          center[i], scale[i], rotation[i], IMAGE)) for i in range(6)])
  back = codec.crop_to_image(crop, center, scale, rotation, image_size=IMAGE)
  np.testing.assert_allclose(back, points, atol=1e-4)
  # Leading dims broadcast: one (2, 3) batch of crops, a scalar rotation.
  back = codec.crop_to_image(crop.reshape(2, 3, 17, 2), center.reshape(2, 3, 2),
                             scale.reshape(2, 3, 2), rotation.reshape(2, 3), image_size=IMAGE)
  np.testing.assert_allclose(back.reshape(6, 17, 2), points, atol=1e-4)


def test_matches_transform_preds_without_rotation():
  rng = np.random.default_rng(5)
  center, scale, _ = random_crops(rng, 4)
  coords = rng.uniform(0, 47, size=(4, 17, 2)).astype(np.float32)
  crop = codec.heatmap_to_crop(coords, image_size=IMAGE, heatmap_size=HEATMAP)
  got = codec.crop_to_image(crop, center, scale, 0.0, image_size=IMAGE)
  for i in range(4):
    want = reference_transform_preds(coords[i], center[i], scale[i], HEATMAP[::-1])
    np.testing.assert_allclose(got[i], want, atol=1e-3)  # float32 coordinates of ~600 px


def test_the_codec_round_trip_recovers_image_keypoints():
  rng = np.random.default_rng(6)
  center, scale, rotation = random_crops(rng, 3)
  crop = random_crop_keypoints(rng, 3 * 17).reshape(3, 17, 3)
  points = codec.crop_to_image(crop[..., :2].astype(np.float64), center, scale, rotation,
                               image_size=IMAGE)
  heatmaps, _ = CODEC.encode(crop[..., :2], crop[..., 2])
  crop_xy, scores = jax.jit(CODEC.decode)(heatmaps)
  keypoints = codec.crop_to_image(np.asarray(crop_xy), center, scale, rotation, image_size=IMAGE)
  # 0.05 crop pixels is 0.05 · scale / (size − 1) image pixels.
  tolerance = 0.05 * scale[:, None, :] / (np.array([IMAGE[1], IMAGE[0]]) - 1)
  assert np.all(np.abs(keypoints - points) <= tolerance)
  assert keypoints.dtype == np.float32 and scores.shape == (3, 17)
  np.testing.assert_array_equal(scores, np.asarray(heatmaps).max(axis=(1, 2)))
  with pytest.raises(ValueError, match='heatmap_size'):
    codec.UDPHeatmap(IMAGE, (32, 24)).decode(heatmaps)


# ---- flip test -------------------------------------------------------------------------------


def equivariant_model(images, flip_index=FLIP_INDEX):
  """A stand-in pose model, flip-equivariant by construction: keypoints hang off the brightness
  centroid c (which mirrors with the image) at offsets ±a_j·s in x for the j-th left/right pair
  (s, the mean brightness, is flip-invariant), self-symmetric keypoints at c; their UDP targets
  are the heatmaps. Mirroring the image therefore mirrors every keypoint and swaps each pair."""
  images = jnp.asarray(images, jnp.float32)
  weight = images.mean(axis=-1)
  total = weight.sum(axis=(-2, -1))
  h, w = images.shape[-3:-1]
  cx = (weight * jnp.arange(w)).sum(axis=(-2, -1)) / total
  cy = (weight * jnp.arange(h)[:, None]).sum(axis=(-2, -1)) / total
  s = weight.mean(axis=(-2, -1))
  xs, ys = [], []
  for i, j in enumerate(flip_index):
    pair = min(i, j)
    side = 0.0 if i == j else (1.0 if i < j else -1.0)
    xs.append(cx + side * (4.0 + 3.0 * pair) * s)
    ys.append(cy + 5.0 * pair - 40.0)
  keypoints = jnp.stack([jnp.stack(xs, -1), jnp.stack(ys, -1)], axis=-1)
  return codec.udp_targets(keypoints, jnp.ones(keypoints.shape[:-1]), image_size=(h, w),
                           heatmap_size=HEATMAP, sigma=2.0)[0]


def test_flip_test_of_equivariant_model_is_unflipped_result():
  rng = np.random.default_rng(7)
  # A brightness ramp plus noise puts the centroid off the crop's axis of symmetry.
  ramp = np.linspace(0.2, 1.0, IMAGE[1])[None, :, None]
  images = (ramp * rng.uniform(0, 1, size=(2, *IMAGE, 3))).astype(np.float32)
  direct = equivariant_model(images)
  flipped = equivariant_model(codec.flip_images(images))
  np.testing.assert_allclose(codec.flip_test_average(direct, flipped, FLIP_INDEX), direct,
                             atol=1e-5)
  # The check has teeth: without the left/right swap, or without the mirror, it fails.
  identity = tuple(range(len(FLIP_INDEX)))
  assert np.abs(codec.flip_test_average(direct, flipped, identity) - direct).max() > 0.1
  assert np.abs(0.5 * (direct + flipped[..., FLIP_INDEX]) - direct).max() > 0.1


def test_flip_heatmaps_back_is_an_involution():
  assert all(FLIP_INDEX[j] == i for i, j in enumerate(FLIP_INDEX))
  maps = np.random.default_rng(8).normal(size=(2, *HEATMAP, 17)).astype(np.float32)
  once = codec.flip_heatmaps_back(maps, FLIP_INDEX)
  assert not np.array_equal(once, maps)
  np.testing.assert_array_equal(codec.flip_heatmaps_back(once, FLIP_INDEX), maps)
  np.testing.assert_array_equal(codec.flip_heatmaps_back(jnp.asarray(maps), FLIP_INDEX), once)


def test_flipped_crop_is_crop_of_flipped_image():
  """Why UDP needs no heatmap shift: mirroring the crop of (centre c, rotation r) equals cropping
  the mirrored image at centre (W − 1 − c_x, c_y) with rotation −r."""
  rng = np.random.default_rng(9)
  image = ndimage.gaussian_filter(rng.uniform(0, 255, size=(300, 400, 3)), (3, 3, 0))
  image = image.astype(np.uint8)
  center, scale, rotation = np.array([180.0, 140.0]), np.array([150.0, 200.0]), 25.0
  crop = transforms.warp_image(
      image, transforms.udp_warp_matrix(center, scale, rotation, IMAGE), IMAGE)
  mirrored_center = np.array([image.shape[1] - 1 - center[0], center[1]])
  crop_of_flipped = transforms.warp_image(
      np.ascontiguousarray(codec.flip_images(image)),
      transforms.udp_warp_matrix(mirrored_center, scale, -rotation, IMAGE), IMAGE)
  diff = np.abs(codec.flip_images(crop).astype(int) - crop_of_flipped.astype(int))
  assert diff.max() <= 1
