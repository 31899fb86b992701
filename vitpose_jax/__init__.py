"""vitpose_jax: multi-skeleton ViTPose++-style pose transformers in JAX/Flax.

Importing the package is cheap (no JAX work); submodules are imported where used:
``vitpose_jax.skeletons`` (schemas as data), ``vitpose_jax.models`` (the factorized ViTPose).
"""

__version__ = '0.1.0'
