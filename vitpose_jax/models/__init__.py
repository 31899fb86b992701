"""The knowledge-factorized ViTPose model (Flax NNX), its configuration and weight surgery."""

from vitpose_jax.models.config import (
    DECODERS,
    VARIANTS,
    ModelConfig,
    ModelConfigError,
    TaskSpec,
    Variant,
    json_differences,
    make_tasks,
    model_config,
)
from vitpose_jax.models.pose import (
    VitPose,
    abstract_model,
    count_params,
    create_model,
    with_kernels,
)
from vitpose_jax.models.surgery import dense_for_task, factorize, init_from
from vitpose_jax.models.vit import Kernels

__all__ = [
    'DECODERS', 'VARIANTS', 'Kernels', 'ModelConfig', 'ModelConfigError', 'TaskSpec', 'Variant',
    'VitPose', 'abstract_model', 'count_params', 'create_model', 'dense_for_task', 'factorize',
    'init_from', 'json_differences', 'make_tasks', 'model_config', 'with_kernels',
]
