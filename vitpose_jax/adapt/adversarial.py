"""Adversarial feature alignment between two domains (DANN; FiDIP for infant pose).

A domain classifier reads the backbone's pooled patch tokens through a gradient-reversal layer
(Ganin & Lempitsky, ICML 2015, "Unsupervised Domain Adaptation by Backpropagation"): the
classifier learns to tell the domains apart, while the reversed gradient, scaled by λ, pushes the
backbone toward features it cannot tell apart. FiDIP (Huang et al., FG 2021, "Invariant
Representation Learning for Infant Pose Estimation with Small Data") applies it to synthetic
against real infant images while fine-tuning the pose model on both.

λ follows DANN's ramp, ``λ(p) = λ_max · (2 / (1 + exp(−γ p)) − 1)`` over training progress
``p ∈ [0, 1]``, so the classifier's early, noisy gradients barely reach the backbone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx


@jax.custom_vjp
def gradient_reversal(x: jax.Array, scale: jax.Array | float) -> jax.Array:
  """``x`` unchanged on the forward pass; on the backward pass its cotangent times ``−scale``
  (no gradient flows to ``scale``)."""
  return x


def _reversal_forward(x, scale):
  return x, scale


def _reversal_backward(scale, cotangent):
  scale = jnp.asarray(scale)
  return (-scale.astype(cotangent.dtype) * cotangent, jnp.zeros_like(scale))


gradient_reversal.defvjp(_reversal_forward, _reversal_backward)


def lambda_ramp(progress: jax.Array | float, *, max_lambda: float = 1.0,
                gamma: float = 10.0) -> jax.Array:
  """DANN's reversal scale at training ``progress`` (fraction of the steps done, clipped to
  [0, 1]): 0 at the start, ``max_lambda · tanh(γ/2)`` at the end."""
  p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
  return max_lambda * (2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0)


class DomainClassifier(nnx.Module):
  """Pooled backbone features (n, width) → one logit per sample (n,): LayerNorm, a hidden ReLU
  layer, a linear output. The logit is for the second domain (label 1)."""

  def __init__(self, width: int, hidden: int = 256, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.hidden = nnx.Linear(width, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, 1, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.out(jax.nn.relu(self.hidden(self.norm(features))))[:, 0]


def domain_loss(logits_first: jax.Array, logits_second: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """``(loss, accuracy)`` of a domain classifier: the binary cross-entropy (nats) of the first
  domain's logits against label 0 and the second's against label 1, each domain's mean weighted
  equally (a mixing ratio does not tilt it); accuracy likewise balanced (0.5 is chance)."""
  first = jnp.mean(optax.sigmoid_binary_cross_entropy(logits_first,
                                                      jnp.zeros_like(logits_first)))
  second = jnp.mean(optax.sigmoid_binary_cross_entropy(logits_second,
                                                       jnp.ones_like(logits_second)))
  accuracy = 0.5 * (jnp.mean(logits_first < 0) + jnp.mean(logits_second > 0))
  return 0.5 * (first + second), accuracy


def pooled_tokens(patch_tokens: jax.Array) -> jax.Array:
  """(n, L, C) patch tokens → (n, C) their mean: a crop's feature, as the classifier reads it."""
  return jnp.mean(patch_tokens.astype(jnp.float32), axis=1)


@dataclasses.dataclass(frozen=True)
class Adversarial:
  """The domain-alignment term a run adds to its step.

  Attributes:
    domains: two ``(name, streams)`` pairs: the task streams whose crops are of each domain (the
      first is label 0, the second label 1).
    weight: weight of :func:`domain_loss` in the total loss; the backbone receives its gradient
      times ``−weight · λ``.
    max_lambda, gamma: the λ ramp (:func:`lambda_ramp`).
    hidden: the classifier's hidden width.
    learning_rate: the classifier's Adam learning rate.
    total_steps: the run's steps, for the ramp's progress.
  """

  domains: tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]]
  weight: float
  max_lambda: float = 1.0
  gamma: float = 10.0
  hidden: int = 256
  learning_rate: float = 1e-3
  total_steps: int = 1

  def classifier(self, width: int, seed: int) -> DomainClassifier:
    """A fresh classifier for ``width``-dimensional features."""
    return DomainClassifier(width, self.hidden, rngs=nnx.Rngs(params=seed))

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate)

  @property
  def streams(self) -> tuple[str, ...]:
    return tuple(s for _, streams in self.domains for s in streams)

  def scale(self, step: jax.Array) -> jax.Array:
    """λ at ``step``."""
    return lambda_ramp(step / max(1, self.total_steps), max_lambda=self.max_lambda,
                       gamma=self.gamma)

  def losses(self, classifier: DomainClassifier, features: Mapping[str, jax.Array],
             step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(weighted loss, terms)`` for the streams' pooled ``features`` {stream: (n, C)}: terms
    ``domain`` (the classifier's loss), ``domain_accuracy`` and ``domain_lambda``."""
    scale = self.scale(step)
    logits = [classifier(gradient_reversal(
        jnp.concatenate([features[s] for s in streams]), scale)) for _, streams in self.domains]
    loss, accuracy = domain_loss(*logits)
    return self.weight * loss, {'domain': loss, 'domain_accuracy': accuracy,
                                'domain_lambda': scale}
