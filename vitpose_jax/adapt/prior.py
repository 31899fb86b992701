"""A pose prior of a target population: a Gaussian mixture over normalised 2-D poses of one schema.

SHIFT (Bose et al. 2025) keeps a student's keypoints on the target population's pose manifold
with a learned prior; this module's prior is a Gaussian mixture model (GMM) over the flattened
normalised pose, fitted to the target schema's labelled poses (no images needed). Why a mixture:

- closed form: EM fits it in seconds on a CPU, with no training loop and no extra network;
- full covariances capture what per-joint models miss: the correlations between joints (limb
  lengths, the left/right structure of a body, the facing that eyes and shoulders agree on);
- its negative log-likelihood is smooth in the keypoints, so it is a penalty on a student's
  soft-argmax keypoints as it stands (:meth:`PosePrior.nll`, in ``jax.numpy``).

SHIFT itself uses a PoseNDF-style distance field; a mixture likelihood is the simpler option.

Normalisation (:func:`normalise_poses`, the same function for fitting and scoring):
  1. root-relative: subtract the midpoint of the hips when the schema names ``left_hip`` and
     ``right_hip`` (in any spelling :func:`~vitpose_jax.skeletons.match_keypoint_names` accepts),
     else the mean of all keypoints;
  2. scale-free: divide by the RMS distance of the keypoints from the root. Unlike a torso length
     it exists for every schema, leans on no single pair of joints (a torso seen end-on, as
     infants lying on their side often are, is short), and smoothly so;
  3. rotation-aligned (``align=True``, when the schema names both shoulders): rotate the root →
     shoulder-midpoint axis to point up (−y). Infants lying seen from above appear at any
     rotation in the image, and an aligned prior is much tighter. It is a rotation, never a
     mirror, so a pose with left and right swapped stays distinguishable.
After normalisation the poses lie on a lower-dimensional set: the hip midpoint is at the origin
(2 degrees of freedom fewer), the RMS radius is 1 (one fewer) and the shoulder midpoint on the −y
axis (one more). Every covariance gets ``reg`` added to its diagonal: on those directions the
mixture then has variance ``reg``, where every normalised pose has zero deviation (exactly for
the two midpoints, to first order for the radius), which adds about the same constant to every
pose's log-likelihood; elsewhere it is a floor under the variance
(default 1e-3: a standard deviation of 3 % of the RMS radius, a few pixels on a 200-pixel person,
the size of annotation noise) that also keeps small components from collapsing.

Fitting uses fully labelled poses only (every keypoint v > 0: a missing joint has no place in the
normalised pose), and by default their mirror images too (labels swapped by the schema's flip
pairs), which doubles small data sets and keeps swapped-limb poses unlikely.

Coordinates are pixels in any frame (image or crop, x right and y down): the normalised pose does
not depend on translation, scale or (aligned) rotation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitpose_jax import skeletons
from vitpose_jax.data import coco, sources
from vitpose_jax.data.coco import DataError
from vitpose_jax.skeletons import Schema

DEFAULT_COMPONENTS = 4
DEFAULT_REG = 1e-3
# A full covariance needs several poses per component to be more than its regulariser.
MIN_POSES_PER_COMPONENT = 10
FORMAT = 'vitpose_jax.pose_prior'
FORMAT_VERSION = 1
# Guards the square roots of the degenerate pose (all keypoints at the root) only: negligible
# against any real pose's squared extent, also in normalised [0, 1] image coordinates.
_EPS = 1e-12


def pose_frame(schema: Schema, *, align: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(root ids, up ids) of a schema: the keypoints whose mean is the root (both hips, else all)
  and those whose mean the aligned axis points at (both shoulders; empty without ``align`` or
  when the schema lacks a shoulder, meaning no rotation)."""
  hips = skeletons.match_keypoint_names(('left_hip', 'right_hip'), schema)
  shoulders = skeletons.match_keypoint_names(('left_shoulder', 'right_shoulder'), schema)
  root = tuple(hips) if None not in hips else tuple(range(schema.num_keypoints))
  up = tuple(shoulders) if align and None not in shoulders else ()
  return root, up


def normalise_poses(keypoints: Any, root_ids: Sequence[int],
                    up_ids: Sequence[int] = ()) -> jax.Array:
  """Root-relative, scale-free, optionally rotation-aligned poses (module docstring).

  Args:
    keypoints: (..., K, 2) [x, y], any units (numpy or jax).
    root_ids: keypoints whose mean is moved to the origin.
    up_ids: keypoints whose mean is rotated onto the −y axis (up in image coordinates); empty:
      no rotation.

  Returns:
    float32 (..., K, 2), RMS distance from the origin 1 (in units of the pose's own RMS radius).
    Differentiable in ``keypoints``, with finite gradients everywhere.
  """
  return _normalise(jnp.asarray(keypoints, jnp.float32), tuple(root_ids), tuple(up_ids))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normalise(x: jax.Array, root_ids: tuple[int, ...], up_ids: tuple[int, ...]) -> jax.Array:
  x = x - x[..., list(root_ids), :].mean(-2, keepdims=True)
  scale = jnp.sqrt(jnp.mean(jnp.sum(x * x, -1), -1) + _EPS)
  x = x / scale[..., None, None]
  if not up_ids:
    return x
  up = x[..., list(up_ids), :].mean(-2)
  ux, uy = jnp.moveaxis(up / jnp.sqrt(jnp.sum(up * up, -1, keepdims=True) + _EPS), -1, 0)
  ux, uy = ux[..., None], uy[..., None]
  # The rotation taking the unit vector (ux, uy) to (0, -1): cos = -uy, sin = -ux.
  px, py = x[..., 0], x[..., 1]
  return jnp.stack([-uy * px + ux * py, -ux * px - uy * py], -1)


# Jitted as a whole: called eagerly (outside a jitted loss), op-by-op dispatch would compile every
# operation of the forward and backward pass apart, seconds per new batch shape.
@functools.partial(jax.jit, static_argnames=('root_ids', 'up_ids'))
def _mixture_nll(keypoints: jax.Array, means: Any, prec_chol: Any, log_weights: Any, *,
                 root_ids: tuple[int, ...], up_ids: tuple[int, ...]) -> jax.Array:
  z = _normalise(keypoints, root_ids, up_ids)
  z = z.reshape(*z.shape[:-2], -1)
  prec_chol = jnp.asarray(prec_chol, jnp.float32)
  y = jnp.einsum('...cd,cde->...ce', z[..., None, :] - jnp.asarray(means, jnp.float32), prec_chol)
  log_det = jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), -1)
  log_prob = -0.5 * jnp.sum(y * y, -1) + log_det - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)
  return -jax.nn.logsumexp(log_prob + jnp.asarray(log_weights, jnp.float32), -1)


@dataclasses.dataclass(frozen=True, eq=False)
class PosePrior:
  """A Gaussian mixture over normalised poses of one schema (module docstring).

  The density of component c at a flattened normalised pose z (2K values, [x0, y0, x1, ...]) is
  N(z; means[c], Σ_c) with Σ_c⁻¹ = prec_chol[c] @ prec_chol[c].T, weighted by exp(log_weights[c]).
  An independent Gaussian per coordinate (:func:`per_joint_gaussian`) is one component with a
  diagonal ``prec_chol``.

  Attributes:
    schema_name: the schema whose keypoint order the poses follow.
    num_keypoints: K.
    root_ids, up_ids: the normalisation (:func:`normalise_poses`).
    means: float64 (C, 2K) component means.
    prec_chol: float64 (C, 2K, 2K) upper-triangular Cholesky factors of the precisions.
    log_weights: float64 (C,) log mixture weights, logsumexp 0.
  """

  schema_name: str
  num_keypoints: int
  root_ids: tuple[int, ...]
  up_ids: tuple[int, ...]
  means: np.ndarray
  prec_chol: np.ndarray
  log_weights: np.ndarray

  def __post_init__(self):
    c, d = len(self.log_weights), 2 * self.num_keypoints
    if self.means.shape != (c, d) or self.prec_chol.shape != (c, d, d):
      raise ValueError(f'pose prior of {self.schema_name}: means {self.means.shape} and prec_chol '
                       f'{self.prec_chol.shape} do not fit {c} components of {d} values')

  @property
  def components(self) -> int:
    return len(self.log_weights)

  def normalise(self, keypoints: Any) -> jax.Array:
    """(..., K, 2) keypoints → (..., K, 2) normalised as this prior's poses were."""
    return normalise_poses(keypoints, self.root_ids, self.up_ids)

  def nll(self, keypoints: Any, weights: Any | None = None) -> jax.Array:
    """Negative log-likelihood of poses under the prior, in nats per pose.

    The density is of the normalised pose, not of pixel coordinates (no Jacobian of the
    normalisation), so values compare across image scales; lower is more plausible.

    Args:
      keypoints: (..., K, 2) [x, y], any units.
      weights: (..., K), or None for all known. A pose with any weight <= 0 is not scored: its
        nll is 0 with zero gradient. The prior is a joint density over all K keypoints and the
        normalisation needs them all, so an unknown joint cannot be marginalised out in closed
        form; average a penalty over ``jnp.all(weights > 0, -1)``. Positive weights are not
        used as confidences.

    Returns:
      float32 (...). Differentiable in ``keypoints``, gradients finite.
    """
    keypoints = jnp.asarray(keypoints, jnp.float32)
    if keypoints.shape[-2:] != (self.num_keypoints, 2):
      raise ValueError(f'pose prior of {self.schema_name} scores (..., {self.num_keypoints}, 2) '
                       f'keypoints, got {keypoints.shape}')
    out = _mixture_nll(keypoints, self.means, self.prec_chol, self.log_weights,
                       root_ids=self.root_ids, up_ids=self.up_ids)
    if weights is None:
      return out
    scored = jnp.all(jnp.asarray(weights) > 0, -1)
    return jnp.where(scored, out, 0.)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes one .npz at ``path`` exactly (no suffix added): the arrays and a JSON ``header``."""
    header = {'format': FORMAT, 'version': FORMAT_VERSION, 'schema': self.schema_name,
              'num_keypoints': self.num_keypoints, 'root_ids': list(self.root_ids),
              'up_ids': list(self.up_ids)}
    with open(path, 'wb') as f:
      np.savez(f, header=np.array(json.dumps(header)), means=self.means,
               prec_chol=self.prec_chol, log_weights=self.log_weights)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> PosePrior:
    """Reads what :meth:`save` wrote; DataError naming the file if it is not a pose prior."""
    path = os.fspath(path)
    try:
      with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data['header']))
        arrays = {k: np.asarray(data[k], np.float64)
                  for k in ('means', 'prec_chol', 'log_weights')}
    except FileNotFoundError:
      raise DataError(f'{path}: pose prior file not found') from None
    except (OSError, ValueError, KeyError) as e:
      raise DataError(f'{path}: not a pose prior file ({e})') from None
    if header.get('format') != FORMAT or header.get('version') != FORMAT_VERSION:
      raise DataError(f'{path}: not a version {FORMAT_VERSION} pose prior file '
                      f'(header {header!r:.120})')
    try:
      return cls(schema_name=header['schema'], num_keypoints=int(header['num_keypoints']),
                 root_ids=tuple(header['root_ids']), up_ids=tuple(header['up_ids']), **arrays)
    except ValueError as e:
      raise DataError(f'{path}: {e}') from None


def _fitting_set(poses: Any, visible: Any, schema: Schema, need: int, what: str,
                 source: str) -> np.ndarray:
  """The fully labelled, finite poses of (N, K, 2) + (N, K) as float64 (M, K, 2); DataError
  naming ``source`` when fewer than ``need`` remain."""
  poses = np.asarray(poses, np.float64)
  visible = np.asarray(visible)
  k = schema.num_keypoints
  if poses.ndim != 3 or poses.shape[1:] != (k, 2) or visible.shape != poses.shape[:2]:
    raise ValueError(f'{source}: poses {poses.shape} and visible {visible.shape} are not '
                     f'(N, {k}, 2) and (N, {k}) for schema {schema.name}')
  keep = (visible > 0).all(1) & np.isfinite(poses).all((1, 2))
  if keep.sum() < need:
    raise DataError(f'{source}: {keep.sum()} of {len(poses)} poses are fully labelled '
                    f'(every {schema.name} keypoint v > 0); {what} needs at least {need}')
  return poses[keep]


def _flat_normalised(poses: np.ndarray, schema: Schema, align: bool,
                     mirror: bool) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
  """(M or 2M, 2K) flattened normalised poses, with their mirror images when ``mirror``, and the
  normalisation's (root ids, up ids)."""
  root_ids, up_ids = pose_frame(schema, align=align)
  if mirror:
    # A mirror image with its labels swapped is a pose of the same population (training's flip
    # augmentation rests on it); a swap without the mirror is not, and stays unlikely.
    flipped = poses[:, list(schema.flip_index)] * np.array([-1., 1.])
    poses = np.concatenate([poses, flipped])
  z = np.asarray(normalise_poses(poses, root_ids, up_ids), np.float64)
  return z.reshape(len(z), -1), root_ids, up_ids


def _log_probs(x: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
  """(N, C) log N(x_n; mean_c, Σ_c), Σ_c⁻¹ = prec_chol[c] prec_chol[c]ᵀ."""
  y = np.einsum('ncd,cde->nce', x[:, None] - means, prec_chol)
  log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(1)
  return -0.5 * (y * y).sum(-1) + log_det - 0.5 * x.shape[1] * np.log(2 * np.pi)


def _logsumexp(a: np.ndarray) -> np.ndarray:
  top = a.max(1, keepdims=True)
  return (top + np.log(np.exp(a - top).sum(1, keepdims=True)))[:, 0]


def _kmeans_labels(x: np.ndarray, components: int, rng: np.random.Generator,
                   iterations: int = 20) -> np.ndarray:
  """Hard labels from k-means++ seeding and Lloyd iterations."""
  centres = [x[rng.integers(len(x))]]
  d2 = ((x - centres[0]) ** 2).sum(1)
  for _ in range(1, components):
    # Duplicate poses can leave no distance to sample by; any pose is then as good a centre.
    i = rng.choice(len(x), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(x))
    centres.append(x[i])
    d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
  centres = np.stack(centres)
  labels = None
  for _ in range(iterations):
    new = ((x[:, None] - centres) ** 2).sum(-1).argmin(1)
    if labels is not None and (new == labels).all():
      break
    labels = new
    for c in range(components):
      if (labels == c).any():
        centres[c] = x[labels == c].mean(0)
  return labels


def _m_step(x: np.ndarray, resp: np.ndarray,
            reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(means, prec_chol, log_weights) maximising the expected log-likelihood under ``resp``."""
  n, d = x.shape
  nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
  means = resp.T @ x / nk[:, None]
  prec_chol = np.empty((len(nk), d, d))
  for c in range(len(nk)):
    diff = x - means[c]
    cov = (resp[:, c, None] * diff).T @ diff / nk[c] + reg * np.eye(d)
    prec_chol[c] = np.linalg.solve(np.linalg.cholesky(cov), np.eye(d)).T
  return means, prec_chol, np.log(nk / n)


def fit_pose_prior(poses: Any, visible: Any, schema: Schema, *,
                   components: int = DEFAULT_COMPONENTS, reg: float = DEFAULT_REG,
                   align: bool = True, mirror: bool = True, seed: int = 0,
                   max_iter: int = 300, tol: float = 1e-5, source: str = 'poses') -> PosePrior:
  """Fits the mixture by EM (k-means++ start, deterministic given ``seed``) to normalised poses.

  Args:
    poses: (N, K, 2) [x, y] in pixels (any frame), in ``schema``'s keypoint order.
    visible: (N, K) COCO visibility; only fully labelled poses (every v > 0) and finite ones are
      used: a missing joint has no place in the normalised pose.
    schema: the poses' schema (its hips and shoulders set the normalisation: :func:`pose_frame`).
    components: mixture components C.
    reg: added to every covariance's diagonal, in squared units of the pose's RMS radius.
    align: rotation-align the poses (:func:`normalise_poses`).
    mirror: fit to the poses and their mirror images (x negated, left and right labels swapped
      by ``schema.flip_index``): twice the data for a population with no preferred side.
    seed: seeds the k-means++ start.
    max_iter, tol: EM stops after ``max_iter`` iterations or when the mean log-likelihood per
      pose gains less than ``tol`` nats.
    source: names the poses' origin (a file) in errors.

  Raises:
    DataError naming ``source``: fewer than ``MIN_POSES_PER_COMPONENT`` × C fully labelled poses.
  """
  x = _fitting_set(poses, visible, schema, MIN_POSES_PER_COMPONENT * components,
                   f'a {components}-component pose prior', source)
  x, root_ids, up_ids = _flat_normalised(x, schema, align, mirror)
  labels = _kmeans_labels(x, components, np.random.default_rng(seed))
  resp = np.eye(components)[labels]
  last = -np.inf
  for _ in range(max_iter):
    means, prec_chol, log_weights = _m_step(x, resp, reg)
    joint = _log_probs(x, means, prec_chol) + log_weights
    total = _logsumexp(joint)
    resp = np.exp(joint - total[:, None])
    if total.mean() - last < tol:
      break
    last = total.mean()
  return PosePrior(schema_name=schema.name, num_keypoints=schema.num_keypoints,
                   root_ids=root_ids, up_ids=up_ids, means=means, prec_chol=prec_chol,
                   log_weights=log_weights)


def per_joint_gaussian(poses: Any, visible: Any, schema: Schema, *, reg: float = DEFAULT_REG,
                       align: bool = True, mirror: bool = True,
                       source: str = 'poses') -> PosePrior:
  """The baseline: an independent Gaussian per normalised keypoint coordinate (one component,
  diagonal covariance), fitted to the same poses with the same normalisation, ``mirror`` and
  ``reg`` as :func:`fit_pose_prior`. It knows each joint's typical place but no correlation
  between joints."""
  x = _fitting_set(poses, visible, schema, MIN_POSES_PER_COMPONENT, 'a per-joint Gaussian',
                   source)
  x, root_ids, up_ids = _flat_normalised(x, schema, align, mirror)
  std = np.sqrt(x.var(0) + reg)
  return PosePrior(schema_name=schema.name, num_keypoints=schema.num_keypoints,
                   root_ids=root_ids, up_ids=up_ids, means=x.mean(0)[None],
                   prec_chol=np.diag(1 / std)[None], log_weights=np.zeros(1))


def read_poses(annotations: str | os.PathLike[str],
               schema: Schema) -> tuple[np.ndarray, np.ndarray]:
  """(poses float32 (N, K, 2) pixels, visible float32 (N, K)) of a COCO keypoint file.

  Read with :func:`vitpose_jax.data.coco.read_coco` (so any layout it reads works, COCO-WholeBody
  included, and its skips apply), without opening images: the file's ``images`` entries need
  ``width`` and ``height``, as COCO's have. DataError naming the file as ``read_coco`` raises.
  """
  annotations = os.fspath(annotations)
  records, _ = coco.read_coco(annotations, os.path.dirname(annotations), schema,
                              check_images=False)
  return (np.stack([r['keypoints'] for r in records]),
          np.stack([r['keypoints_visible'] for r in records]))


def pose_prior_from_file(annotations: str | os.PathLike[str], schema: Schema, *,
                         fit: Callable[..., PosePrior] = fit_pose_prior, **kw) -> PosePrior:
  """``fit`` (:func:`fit_pose_prior` or :func:`per_joint_gaussian`, with ``kw``) on the fully
  labelled poses of a COCO keypoint file (:func:`read_poses`); errors name the file."""
  return fit(*read_poses(annotations, schema), schema, source=os.fspath(annotations), **kw)


def pose_prior_from_spec(spec: Mapping[str, Any], schema: Schema, split: str = 'train', *,
                         fit: Callable[..., PosePrior] = fit_pose_prior, **kw) -> PosePrior:
  """:func:`pose_prior_from_file` on a data spec's annotations for ``split``
  (:func:`vitpose_jax.data.sources.files`; a synthetic spec is generated on first use)."""
  annotations, _ = sources.files(spec, split)
  return pose_prior_from_file(annotations, schema, fit=fit, **kw)
