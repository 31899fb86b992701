"""The pose prior (vitpose_jax.adapt.prior): fitted on synthetic training poses, scored on
held-out poses of a test seed; its invariances, gradients, file round trip and refusals."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitpose_jax import skeletons, synthetic
from vitpose_jax.adapt import prior
from vitpose_jax.data.coco import DataError
from vitpose_jax.skeletons.schema import name_words

# 200 training and 100 held-out instances per population: 600 generated instances in all, in the
# data cache after the first run.
TRAIN_NUM, TEST_NUM = 200, 100
POPULATIONS = {'adult': 'coco17', 'infant': 'infant_smil25'}
LIMB_WORDS = ('shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle')


def _spec(population: str, num: int, seed: int) -> dict:
  return dict(source='synthetic', population=population, num=num, seed=seed)


@functools.cache
def _fitted(population: str) -> tuple[prior.PosePrior, prior.PosePrior, np.ndarray]:
  """(GMM prior, per-joint baseline) fitted on the population's training poses, and its fully
  labelled held-out poses (test seed, val split)."""
  schema = skeletons.get(POPULATIONS[population])
  train = _spec(population, TRAIN_NUM, 0)
  gmm = prior.pose_prior_from_spec(train, schema)
  baseline = prior.pose_prior_from_spec(train, schema, fit=prior.per_joint_gaussian)
  annotations, _ = synthetic.dataset(population, 'val', TEST_NUM, synthetic.TEST_SEED_START)
  poses, visible = prior.read_poses(annotations, schema)
  return gmm, baseline, poses[(visible > 0).all(1)]


def _limb_swap(schema: skeletons.Schema) -> np.ndarray:
  """The permutation swapping left and right arms and legs, and nothing else (no mirror)."""
  perm = np.arange(schema.num_keypoints)
  for i, j in enumerate(schema.flip_index):
    if any(w in name_words(schema.keypoints[i]) for w in LIMB_WORDS):
      perm[i] = j
  return perm


@pytest.mark.slow  # generates 600 synthetic instances on an empty cache
@pytest.mark.parametrize('population', POPULATIONS)
def test_gmm_scores_held_out_poses_above_the_per_joint_gaussian(population):
  gmm, baseline, held_out = _fitted(population)
  assert len(held_out) >= 0.7 * TEST_NUM
  gmm_ll, base_ll = -gmm.nll(held_out).mean(), -baseline.nll(held_out).mean()
  print(f'{population}: mean held-out log-likelihood GMM {gmm_ll:.2f}, per-joint {base_ll:.2f} '
        f'nats per pose ({len(held_out)} poses)')
  assert gmm_ll > base_ll


@pytest.mark.slow  # generates 600 synthetic instances on an empty cache
@pytest.mark.parametrize('population', POPULATIONS)
def test_swapped_limbs_rank_below_the_original_poses(population):
  gmm, _, held_out = _fitted(population)
  perm = _limb_swap(skeletons.get(POPULATIONS[population]))
  assert (perm != np.arange(len(perm))).sum() == 12  # six left/right limb pairs
  original, swapped = gmm.nll(held_out), gmm.nll(held_out[:, perm])
  below = float(jnp.mean(swapped > original))
  print(f'{population}: limb-swapped pose less likely for {below:.3f} of {len(held_out)} poses, '
        f'by {float(jnp.mean(swapped - original)):.1f} nats on average')
  # An adult's swapped limbs read as the same body seen from behind, contradicted only by the
  # face's left/right order (small in near-profile heads), so some swaps stay plausible.
  assert below >= 0.85
  assert swapped.mean() > original.mean()


def test_nll_is_invariant_to_translation_scale_and_rotation_with_finite_gradients():
  gmm, _, held_out = _fitted('infant')
  poses = jnp.asarray(held_out[:8])
  angle = 2.1
  rotation = jnp.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  moved = 3.5 * poses @ rotation.T + jnp.array([-40., 170.])
  np.testing.assert_allclose(gmm.nll(moved), gmm.nll(poses), rtol=1e-4, atol=1e-2)
  grad = jax.grad(lambda k: gmm.nll(k).sum())(poses)
  assert grad.shape == poses.shape and bool(jnp.isfinite(grad).all())
  assert float(jnp.abs(grad).max()) > 0
  # A pose with an unknown joint is not scored; the others keep their values.
  weights = jnp.ones(poses.shape[:2]).at[0, 3].set(0.)
  nll = gmm.nll(poses, weights)
  assert float(nll[0]) == 0 and np.allclose(nll[1:], gmm.nll(poses[1:]))
  assert bool(jnp.isfinite(jax.grad(lambda k: gmm.nll(k, weights).sum())(poses)).all())


def test_save_load_round_trip_gives_identical_nll(tmp_path):
  gmm, baseline, held_out = _fitted('adult')
  for fitted in (gmm, baseline):
    path = tmp_path / f'{fitted.components}.prior'
    fitted.save(path)
    loaded = prior.PosePrior.load(path)
    assert (loaded.schema_name, loaded.up_ids, loaded.root_ids) == (
        fitted.schema_name, fitted.up_ids, fitted.root_ids)
    np.testing.assert_array_equal(loaded.nll(held_out), fitted.nll(held_out))
  (tmp_path / 'bad.npz').write_bytes(b'not a zip')
  with pytest.raises(DataError, match='bad.npz: not a pose prior file'):
    prior.PosePrior.load(tmp_path / 'bad.npz')


def test_fitting_is_deterministic_given_the_seed():
  schema = skeletons.get('coco17')
  annotations, _ = synthetic.dataset('adult', 'train', TRAIN_NUM, 0)
  poses, visible = prior.read_poses(annotations, schema)
  a, b = (prior.fit_pose_prior(poses, visible, schema, seed=3) for _ in range(2))
  np.testing.assert_array_equal(a.means, b.means)
  np.testing.assert_array_equal(a.prec_chol, b.prec_chol)


def test_too_few_fully_labelled_poses_is_an_error_naming_the_file():
  schema = skeletons.get('coco17')
  annotations, _ = synthetic.dataset('adult', 'train', TRAIN_NUM, 0)
  poses, visible = prior.read_poses(annotations, schema)
  visible = visible.copy()
  visible[8:, 0] = 0  # only the first 8 poses stay fully labelled (or fewer)
  with pytest.raises(DataError, match=r'^train\.json: \d of 200 poses are fully labelled .*'
                     r'a 4-component pose prior needs at least 40$'):
    prior.fit_pose_prior(poses, visible, schema, source='train.json')
  with pytest.raises(DataError, match='annotations.json: .* fully labelled'):
    prior.pose_prior_from_file(annotations, schema, components=100)
