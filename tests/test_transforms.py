"""Top-down transforms: pixels and keypoints move together, mmpose semantics, grain."""

import dataclasses

import grain
import numpy as np
import pytest
from PIL import Image

from vitpose_jax import skeletons
from vitpose_jax.data import transforms as T

COCO = skeletons.get('coco17')
INPUT = (256, 192)


def make_sample(seed=0, height=480, width=640, num_keypoints=17):
  rng = np.random.default_rng(seed)
  keypoints = np.zeros((num_keypoints, 3), np.float32)
  keypoints[:, 0] = rng.uniform(200, 440, num_keypoints)
  keypoints[:, 1] = rng.uniform(60, 420, num_keypoints)
  keypoints[:, 2] = rng.choice([0, 1, 2], num_keypoints, p=[0.1, 0.2, 0.7])
  return {
      'image': rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
      'center': np.array([320.0, 240.0], np.float32),
      'scale': np.array([300.0, 400.0], np.float32),
      'bbox': np.array([200.0, 60.0, 240.0, 360.0], np.float32),
      'keypoints': keypoints[:, :2].copy(),
      'keypoints_visible': keypoints[:, 2].copy(),
      'image_id': np.int64(7),
      'instance_id': np.int64(11),
  }


def blob_image(points, height, width, sigma):
  """A float image of unit-peak Gaussian blobs at (x, y) pixel-centre points, as uint8 RGB."""
  ys, xs = np.mgrid[:height, :width]
  image = np.zeros((height, width))
  for x, y in points:
    image = np.maximum(image, np.exp(-((xs - x)**2 + (ys - y)**2) / (2 * sigma**2)))
  return np.repeat(np.round(image * 255).astype(np.uint8)[..., None], 3, axis=2)


def centroid(image, x, y, radius=7):
  """Intensity-weighted (x, y) centroid of the window around the rounded (x, y)."""
  x0, y0 = round(x), round(y)
  patch = image[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1, 0].astype(np.float64)
  ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
  return (patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()


def test_flip_is_an_involution_and_swaps_the_schema_pairs():
  sample = make_sample()
  flipped = T.flip_sample(sample, COCO.flip_index)
  width = sample['image'].shape[1]
  # The pixels are left for the crop to read mirrored.
  assert flipped['image'] is sample['image'] and flipped['flipped']
  for left, right in COCO.flip_pairs:
    for a, b in ((left, right), (right, left)):
      assert flipped['keypoints'][a, 1] == sample['keypoints'][b, 1]
      assert flipped['keypoints_visible'][a] == sample['keypoints_visible'][b]
      assert flipped['keypoints'][a, 0] == width - 1 - sample['keypoints'][b, 0]
  unpaired = sorted(set(range(17)) - {i for p in COCO.flip_pairs for i in p})
  assert unpaired == [0]  # the nose stays, mirrored
  assert flipped['center'][0] == width - 1 - sample['center'][0]
  twice = T.flip_sample(flipped, COCO.flip_index)
  assert not twice['flipped']
  np.testing.assert_array_equal(twice['keypoints_visible'], sample['keypoints_visible'])
  for key in ('keypoints', 'center', 'scale', 'bbox'):  # x → W − 1 − x twice, up to float32
    np.testing.assert_allclose(twice[key], sample[key], rtol=0, atol=1e-4)


def test_flip_moves_pixels_with_keypoints():
  points = np.array([[8.0, 7.0], [30.3, 15.6]])
  image = blob_image(points, 24, 40, sigma=1.5)
  # The box spanning the image's first to last pixel centre: the crop is the (mirrored) image.
  sample = {'image': image, 'keypoints': points.astype(np.float32),
            'keypoints_visible': np.ones(2, np.float32),
            'center': np.array([19.5, 11.5], np.float32),
            'scale': np.array([39.0, 23.0], np.float32)}
  out = T.AffineCrop((24, 40)).map(T.flip_sample(sample, (0, 1)))
  np.testing.assert_array_equal(out['image'], image[:, ::-1])
  for x, y in out['keypoints']:
    np.testing.assert_allclose(centroid(out['image'], x, y, radius=6), (x, y), atol=0.05)


@pytest.mark.parametrize('seed', range(6))
def test_flip_folded_into_the_crop_matches_cropping_a_mirrored_image(seed):
  # The crop reads a flipped sample's image through the mirror composed into its warp; cropping
  # an explicitly mirrored copy must give the same crop, up to the rounding of the sample points.
  rng = np.random.default_rng(seed)
  sample = make_sample(seed, height=200, width=257)
  sample['center'] = rng.uniform([60, 50], [200, 150]).astype(np.float32)
  sample['scale'] = (rng.uniform(60, 300) * np.array([0.75, 1.0])).astype(np.float32)
  sample['rotation'] = np.float32(rng.uniform(-80, 80) if seed % 2 else 0.0)
  flipped = T.flip_sample(sample, COCO.flip_index)
  explicit = {**flipped, 'image': np.ascontiguousarray(sample['image'][:, ::-1])}
  del explicit['flipped']
  crop = T.AffineCrop(INPUT)
  folded, reference = crop.map(flipped), crop.map(explicit)
  assert set(folded) == set(reference)
  diff = np.abs(folded['image'].astype(int) - reference['image'].astype(int))
  assert diff.max() <= 1 and diff.mean() < 0.01
  for key in ('keypoints', 'keypoints_visible', 'keypoint_weights', 'center', 'scale',
              'rotation'):
    np.testing.assert_array_equal(folded[key], reference[key])


def test_random_flip_probability_and_passthrough():
  sample = make_sample()
  flip = T.RandomFlip(COCO, T.AugmentConfig(flip_prob=0.5))
  rng = np.random.default_rng(0)
  flips = [flip.random_map(sample, rng)['center'][0] != sample['center'][0] for _ in range(400)]
  assert 0.4 < np.mean(flips) < 0.6
  assert T.RandomFlip(COCO, T.AugmentConfig(flip_prob=0.0)).random_map(sample, rng) is sample


def test_identity_crop_reproduces_the_image():
  # With the box spanning the image's first to last pixel centre, UDP's warp is the identity:
  # a half-pixel slip between PIL's corner convention and ours would blur every pixel.
  image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
  matrix = T.udp_warp_matrix(np.array([14.5, 19.5]), np.array([29.0, 39.0]), 0.0, (40, 30))
  np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
  np.testing.assert_array_equal(T.warp_image(image, matrix, (40, 30)), image)


def test_warp_matrix_maps_the_box_onto_the_crop_span():
  center, scale = np.array([100.0, 80.0]), np.array([60.0, 80.0])
  matrix = T.udp_warp_matrix(center, scale, 0.0, INPUT)
  corners = center + np.array([[-0.5, -0.5], [0.5, 0.5]]) * scale
  np.testing.assert_allclose(T.warp_points(corners, matrix),
                             [[0, 0], [INPUT[1] - 1, INPUT[0] - 1]], atol=1e-9)
  rotated = T.udp_warp_matrix(center, scale, 90.0, INPUT)
  # Positive rotation turns the content clockwise on screen (y down), as mmpose's matrix does: a
  # point right of the centre lands below it.
  x, y = T.warp_points(center + [10.0, 0.0], rotated)
  assert x == pytest.approx((INPUT[1] - 1) / 2) and y > (INPUT[0] - 1) / 2


@pytest.mark.parametrize('seed, rotation, scale', [
    (0, 30.0, (150.0, 200.0)), (1, -30.0, (90.0, 120.0)), (2, 75.0, (240.0, 320.0)),
    (3, 0.0, (120.0, 160.0)), (4, 180.0, (180.0, 240.0)),
])
def test_affine_crop_moves_pixels_with_keypoints(seed, rotation, scale):
  rng = np.random.default_rng(seed)
  height, width = 300, 320
  center = np.array([160.0, 150.0], np.float32)
  scale = np.array(scale, np.float32)
  crop = T.AffineCrop(INPUT)
  # One blob per image so no neighbour leaks into a centroid; its source σ makes it about 2 px
  # in the crop, and points inside the box keep the whole blob inside the crop.
  sigma = 2.0 * scale[0] / (INPUT[1] - 1)
  for point in center + rng.uniform(-0.35, 0.35, size=(4, 2)) * scale:
    sample = {'image': blob_image([point], height, width, sigma),
              'keypoints': np.array([point], np.float32),
              'keypoints_visible': np.array([2.0], np.float32), 'center': center,
              'scale': scale, 'rotation': np.float32(rotation), 'bbox': np.zeros(4, np.float32),
              'extra': 'kept'}
    out = crop.map(sample)
    assert out['image'].shape == (*INPUT, 3) and 'bbox' not in out and out['extra'] == 'kept'
    (x, y), w = out['keypoints'][0], out['keypoint_weights'][0]
    assert w == 1.0 and 10 <= x <= INPUT[1] - 11 and 10 <= y <= INPUT[0] - 11
    # A half-pixel convention slip would show as a ~0.5 px offset; bilinear resampling and uint8
    # rounding of a 2 px blob move its centroid by a few hundredths.
    np.testing.assert_allclose(centroid(out['image'], x, y, radius=9), (x, y), atol=0.1)


@pytest.mark.parametrize('flip', [False, True])
def test_a_pil_image_crops_exactly_as_its_array(flip):
  # Packed sources hand out PIL images, in-memory ones arrays: the crop must not tell them apart.
  sample = {**make_sample(3), 'rotation': np.float32(25.0)}
  as_pil = {**sample, 'image': Image.fromarray(sample['image'])}
  if flip:
    sample, as_pil = T.flip_sample(sample, COCO.flip_index), T.flip_sample(as_pil, COCO.flip_index)
  crop = T.AffineCrop(INPUT)
  a, b = crop.map(sample), crop.map(as_pil)
  assert b['image'].dtype == np.uint8 and b['image'].shape == (*INPUT, 3)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_affine_crop_keeps_weight_from_labels_only():
  sample = make_sample()
  sample['keypoints'][0] = [5.0, 5.0]  # labelled, far outside the crop
  sample['keypoints_visible'][:2] = [2.0, 0.0]
  out = T.AffineCrop(INPUT).map(sample)
  assert out['keypoint_weights'][0] == 1.0 and out['keypoints'][0, 0] < 0
  assert out['keypoint_weights'][1] == 0.0
  np.testing.assert_array_equal(out['keypoints_visible'], sample['keypoints_visible'])
  np.testing.assert_array_equal(out['keypoint_weights'], sample['keypoints_visible'] > 0)
  assert out['rotation'] == 0.0


def test_affine_crop_of_an_unlabelled_sample_is_the_same_image():
  # Inference crops carry no labels: the crop needs none and adds no keypoint keys.
  sample = make_sample()
  bare = {k: v for k, v in sample.items() if k not in ('keypoints', 'keypoints_visible')}
  crop = T.AffineCrop(INPUT)
  out = crop.map(bare)
  assert not {'keypoints', 'keypoints_visible', 'keypoint_weights'} & set(out)
  np.testing.assert_array_equal(out['image'], crop.map(sample)['image'])


def test_half_body_box_contains_the_chosen_joints():
  half = T.HalfBody(COCO, INPUT, T.AugmentConfig(half_body_prob=1.0))
  rng = np.random.default_rng(0)
  parts = {'upper': list(COCO.upper_body_ids), 'lower': list(COCO.lower_body_ids)}
  chosen = []
  for seed in range(60):
    sample = make_sample(seed)
    sample['keypoints_visible'][:] = 2
    out = half.random_map(sample, rng)
    # The centre is the mean of the chosen part's labelled joints, which names the part.
    means = {p: sample['keypoints'][ids, :2].mean(axis=0) for p, ids in parts.items()}
    part = min(means, key=lambda p: np.abs(means[p] - out['center']).max())
    np.testing.assert_allclose(out['center'], means[part], atol=1e-4)
    chosen.append(part)
    w, h = out['scale']
    assert w / h == pytest.approx(INPUT[1] / INPUT[0], rel=1e-5)
    xy = sample['keypoints'][parts[part], :2]
    # mmpose centres the box on the joints' mean, not their extent's midpoint, so containment
    # holds unless a joint lies over 0.75 extents from the mean; uniform draws never do.
    assert np.all(np.abs(xy - out['center']) <= out['scale'] / 2)
    # The 1.5 padding: the tighter side spans the joints' extent times 1.5.
    extent = xy.max(axis=0) - xy.min(axis=0)
    assert np.max(extent / out['scale']) == pytest.approx(1 / 1.5, rel=1e-5)
  assert 0.5 < chosen.count('upper') / len(chosen) < 0.9  # Φ(0.5) ≈ 0.69 preference


def test_half_body_needs_more_than_min_joints():
  half = T.HalfBody(COCO, INPUT, T.AugmentConfig(half_body_prob=1.0))
  sample = make_sample()
  sample['keypoints_visible'][:] = 0
  sample['keypoints_visible'][:8] = 2  # exactly half_body_min_joints: mmpose needs more
  assert half.random_map(sample, np.random.default_rng(0)) is sample


def test_scale_and_rotation_stay_within_clip_bounds():
  config = T.AugmentConfig()
  transform = T.RandomScaleRotation(config)
  sample = make_sample()
  rng = np.random.default_rng(0)
  outs = [transform.random_map(sample, rng) for _ in range(2000)]
  factors = np.array([o['scale'] / sample['scale'] for o in outs])
  rotations = np.array([o['rotation'] for o in outs])
  np.testing.assert_allclose(factors[:, 0], factors[:, 1], rtol=1e-6)
  assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6
  assert factors.min() < 0.55 and factors.max() > 1.45  # the clip is reached
  assert np.abs(rotations).max() <= 80 and np.abs(rotations).max() > 75
  assert 0.55 < np.mean(rotations != 0) < 0.65
  assert all(o['rotation'].dtype == np.float32 for o in outs[:10])


def test_centre_jitter_bounds():
  jitter = T.CentreJitter(T.AugmentConfig())
  sample = make_sample()
  rng = np.random.default_rng(0)
  shifts = np.array([jitter.random_map(sample, rng)['center'] - sample['center']
                     for _ in range(1000)])
  assert np.all(np.abs(shifts) <= 0.2 * sample['bbox'][2:4] + 1e-3)
  assert 0.25 < np.mean(np.any(shifts != 0, axis=1)) < 0.35


def test_color_jitter_changes_only_pixels():
  config = T.AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4)
  sample = {'image': make_sample()['image'][:64, :48], 'keypoints': np.zeros((17, 2), np.float32)}
  out = T.ColorJitter(config).random_map(sample, np.random.default_rng(0))
  assert out['image'].dtype == np.uint8 and out['image'].shape == (64, 48, 3)
  assert not np.array_equal(out['image'], sample['image'])
  assert out['keypoints'] is sample['keypoints']
  np.testing.assert_array_equal(T.color_jitter(sample['image'], 1.0, 1.0, 1.0), sample['image'])


EXPECTED = {'image': ((256, 192, 3), np.uint8), 'keypoints': ((17, 2), np.float32),
            'keypoints_visible': ((17,), np.float32), 'keypoint_weights': ((17,), np.float32),
            'center': ((2,), np.float32), 'scale': ((2,), np.float32),
            'rotation': ((), np.float32), 'image_id': ((), np.int64),
            'instance_id': ((), np.int64)}


def run(transforms, sample, rng):
  for t in transforms:
    sample = t.random_map(sample, rng) if isinstance(t, grain.transforms.RandomMap) else t.map(
        sample)
  return sample


@pytest.mark.parametrize('config', [T.AugmentConfig(),
                                    T.AugmentConfig(brightness=0.2, contrast=0.2, saturation=0.2)])
def test_train_pipeline_output(config):
  transforms = T.train_transforms(COCO, INPUT, config)
  assert [type(t).__name__ for t in transforms] == (
      ['CentreJitter', 'RandomFlip', 'HalfBody', 'RandomScaleRotation', 'AffineCrop']
      + (['ColorJitter'] if config.color_jitter else []))
  sample = make_sample()
  original = {k: np.copy(v) for k, v in sample.items()}
  rng = np.random.default_rng(0)
  for _ in range(5):
    out = run(transforms, sample, rng)
    assert set(out) == set(EXPECTED)
    for key, (shape, dtype) in EXPECTED.items():
      assert np.shape(out[key]) == shape and np.asarray(out[key]).dtype == dtype, key
    assert set(np.unique(out['keypoint_weights'])) <= {0.0, 1.0}
  for key, value in original.items():  # nothing was modified in place
    np.testing.assert_array_equal(sample[key], value)


def test_eval_pipeline_is_deterministic():
  sample = make_sample()
  a = run(T.eval_transforms(COCO, INPUT), sample, None)
  b = run(T.eval_transforms(COCO, INPUT), sample, None)
  assert set(a) == set(EXPECTED)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['rotation'] == 0.0
  np.testing.assert_array_equal(a['center'], sample['center'])
  np.testing.assert_array_equal(a['scale'], sample['scale'])


def test_runs_inside_grain_deterministically_per_seed():
  samples = [make_sample(seed, height=120, width=160) for seed in range(4)]
  for s in samples:
    s['keypoints'][:, :2] /= 4
    s['center'], s['scale'], s['bbox'] = s['center'] / 4, s['scale'] / 4, s['bbox'] / 4
  small = (64, 48)
  config = dataclasses.replace(T.AugmentConfig(), flip_prob=0.5, rotation_prob=1.0)

  def build(seed):
    ds = grain.MapDataset.source(samples).seed(seed)
    return ds.apply(T.train_transforms(COCO, small, config))

  first, again, other = list(build(0)), list(build(0)), list(build(1))
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(a['keypoints'], c['keypoints']) for a, c in zip(first, other))
  assert first[0]['image'].shape == (*small, 3)
  evaluated = list(grain.MapDataset.source(samples).apply(T.eval_transforms(COCO, small)))
  assert [e['instance_id'] for e in evaluated] == [11] * 4


def test_blur_and_noise_are_off_by_default_and_change_only_pixels():
  assert not T.AugmentConfig().blur_noise
  config = T.AugmentConfig(blur=3.0, noise=20.0)
  assert type(T.train_transforms(COCO, INPUT, config)[-1]).__name__ == 'BlurNoise'
  crop = blob_image([(48, 64)], 128, 96, 2.0)
  sample = {'image': crop, 'keypoints': np.ones((17, 2), np.float32)}
  rng = np.random.default_rng(0)
  blurred = [T.BlurNoise(T.AugmentConfig(blur=3.0)).random_map(sample, rng)['image']
             for _ in range(40)]
  changed = [not np.array_equal(b, crop) for b in blurred]
  assert 10 < sum(changed) < 30  # with probability 0.5
  assert all(b.max() <= crop.max() for b in blurred)  # a blur lowers the peak
  noisy = T.BlurNoise(T.AugmentConfig(noise=20.0)).random_map(sample, rng)
  residual = noisy['image'].astype(np.float32) - crop
  assert noisy['image'].dtype == np.uint8 and 0 < residual.std() <= 20.0 * 1.1
  assert noisy['keypoints'] is sample['keypoints']


def _two_views_sample(seed=0):
  """make_sample with a rectangular person mask whose pixels are white, the rest dark."""
  from pycocotools import mask as mask_utils

  sample = make_sample(seed)
  mask = np.zeros((480, 640), np.uint8)
  mask[100:400, 250:400] = 1
  sample['image'] = np.where(mask[..., None] > 0, 255, 0).astype(np.uint8).repeat(3, axis=2)
  sample['segmentation'] = mask_utils.encode(np.asfortranarray(mask))['counts']
  sample['image_size'] = np.array([640, 480], np.int32)
  return sample


@pytest.mark.parametrize('weak_flip, strong_flip', [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_two_views_transform_maps_weak_crop_points_onto_strong_ones(weak_flip, strong_flip):
  weak = T.AugmentConfig(flip_prob=weak_flip, rotation_prob=1.0)
  strong = T.AugmentConfig(flip_prob=strong_flip, rotation_prob=1.0, brightness=0.3,
                           blur=2.0, noise=10.0)
  views = T.TwoViews(COCO, INPUT, weak, strong)
  sample = make_sample(3)
  for seed in range(12):
    out = views.random_map(sample, np.random.default_rng(seed))
    # The weak view is the first draw of the same generator: replayed, it gives its keypoints.
    weak_view = run(T.train_transforms(COCO, INPUT, weak), sample, np.random.default_rng(seed))
    np.testing.assert_array_equal(out['image_weak'], weak_view['image'])
    assert out['view_flip'] == float(weak_flip != strong_flip)
    assert out['view_transform'].shape == (3, 3) and out['view_transform'].dtype == np.float32
    moved = T.warp_points(weak_view['keypoints'].astype(np.float64),
                          out['view_transform'][:2].astype(np.float64))
    strong_points = out['keypoints'][np.asarray(COCO.flip_index)] if out['view_flip'] else (
        out['keypoints'])
    np.testing.assert_allclose(moved, strong_points, atol=1e-3)
  for key, shape, dtype in (
      ('image', (*INPUT, 3), np.uint8), ('image_weak', (*INPUT, 3), np.uint8),
      ('view_flip', (), np.float32), ('mask_distance', INPUT, np.float32),
      ('mask_weight', (), np.float32), ('keypoints', (17, 2), np.float32),
      ('keypoint_weights', (17,), np.float32), ('rotation', (), np.float32)):
    assert np.shape(out[key]) == shape and np.asarray(out[key]).dtype == dtype, key
  assert out['mask_weight'] == 0 and not out['mask_distance'].any()  # no segmentation


@pytest.mark.parametrize('strong_flip', [0, 1])
def test_two_views_mask_distance_is_zero_on_the_mask_and_grows_away_from_it(strong_flip):
  sample = _two_views_sample()
  strong = T.AugmentConfig(flip_prob=strong_flip, rotation_prob=1.0)
  views = T.TwoViews(COCO, INPUT, T.AugmentConfig(), strong)
  for seed in range(4):
    out = views.random_map(sample, np.random.default_rng(seed))
    assert out['mask_weight'] == 1.0 and 'segmentation' not in out
    on_mask, distance = out['mask_distance'] == 0, out['mask_distance']
    # The mask is warped as the image is (mirror included): the white pixels are the mask's.
    assert np.mean(on_mask == (out['image'][..., 0] > 127)) > 0.98
    assert 0 < on_mask.sum() < on_mask.size and (distance[~on_mask] >= 1).all()
    # Walking away from the mask along a row, the distance grows.
    rows = np.flatnonzero(on_mask.any(axis=1))
    row = rows[len(rows) // 2]
    right = int(np.flatnonzero(on_mask[row]).max())
    assert (np.diff(distance[row, right:]) > 0).all()


def test_two_views_of_an_unlabelled_instance_have_no_keypoint_weight():
  sample = _two_views_sample()
  sample['keypoints_visible'] = np.zeros(17, np.float32)
  sample['keypoints'] = np.zeros((17, 2), np.float32)
  out = T.TwoViews(COCO, INPUT, T.AugmentConfig(), T.AugmentConfig()).random_map(
      sample, np.random.default_rng(0))
  assert not out['keypoint_weights'].any() and out['mask_weight'] == 1.0
