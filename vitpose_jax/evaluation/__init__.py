"""Evaluation: COCO OKS AP/AR for any schema, WholeBody per-part AP, PCK/PCKh, OKS-NMS and
rescoring (see :mod:`vitpose_jax.evaluation.metrics` for layouts and the mmpose semantics)."""

from vitpose_jax.evaluation.evaluators import (
    EVALUATORS,
    KeypointEvaluator,
    make_evaluator,
    run_evaluators,
)
from vitpose_jax.evaluation.metrics import (
    COUNT_NAMES,
    STAT_NAMES,
    ResultsError,
    coco_keypoint_metrics,
    nms_per_image,
    oks_nms,
    pck,
    pck_metrics,
    pckh,
    rescore,
    scored_annotations,
    wholebody_metrics,
)

__all__ = [
    'COUNT_NAMES', 'EVALUATORS', 'KeypointEvaluator', 'ResultsError', 'STAT_NAMES',
    'coco_keypoint_metrics', 'make_evaluator', 'nms_per_image', 'oks_nms', 'pck', 'pck_metrics',
    'pckh', 'rescore', 'run_evaluators', 'scored_annotations', 'wholebody_metrics',
]
