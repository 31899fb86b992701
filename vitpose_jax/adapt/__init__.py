"""Unsupervised adaptation to a target population (SHIFT-style: Bose et al. 2025): a mean teacher,
a pose prior of the target population (:mod:`~vitpose_jax.adapt.prior`) and silhouette
consistency."""
