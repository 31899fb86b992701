"""A teacher of one keypoint schema guiding a student of another, on the joints they share.

The teacher (e.g. the shipped coco17 adult model) is run on the student's crops; its heatmaps of
the keypoints both schemas name alike (:func:`vitpose_jax.skeletons.keypoint_mapping`: coco17 and
infant_smil25 share 13) are the targets of the student's channels of those keypoints. The
student's other keypoints learn from whatever labels exist. This is the transfer across keypoint
systems of the infant-pose literature, as heatmap distillation restricted to shared channels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vitpose_jax import codec, skeletons
from vitpose_jax.adapt import meanteacher


class CrossSchemaError(ValueError):
  """Two schemas share no keypoint, so one cannot teach the other."""


def shared_channels(teacher: skeletons.Schema, student: skeletons.Schema
                    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """``(teacher channels, student channels)`` of the keypoints both schemas name alike, in the
  teacher's order. CrossSchemaError when there are none."""
  pairs = skeletons.keypoint_mapping(teacher, student)
  if not pairs:
    raise CrossSchemaError(f'schemas {teacher.name} and {student.name} share no keypoint name')
  return tuple(i for i, _ in pairs), tuple(j for _, j in pairs)


def shared_joint_loss(student: jax.Array, teacher: jax.Array, teacher_index, student_index,
                      joint_weights: jax.Array | None = None, threshold: float = 0.0
                      ) -> tuple[jax.Array, jax.Array]:
  """``(loss, confident fraction)``: the heatmap MSE (as :func:`vitpose_jax.codec.joints_mse`,
  over the shared channels) of the student's (B, h, w, K_student) heatmaps to the teacher's
  (B, h, w, K_teacher), channel ``student_index[i]`` against ``teacher_index[i]``, counting a
  sample's shared joint only where the teacher's heatmap peaks at ``threshold`` or more (a flat,
  unsure heatmap would teach the student to be unsure); ``joint_weights`` (K_student,) are the
  student schema's. No gradient reaches the teacher or the student's other channels."""
  student_index = jnp.asarray(student_index)
  target = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32)[..., jnp.asarray(teacher_index)])
  picked = student[..., student_index]
  weights = meanteacher.confident_joints(target, threshold)
  joints = None if joint_weights is None else jnp.asarray(joint_weights)[student_index]
  return codec.joints_mse(picked, target, weights, joints), jnp.mean(weights)


@dataclasses.dataclass(frozen=True)
class CrossSchema:
  """The shared-joint distillation term a run adds to its step.

  Attributes:
    teacher_task: the teacher model's task (head) whose heatmaps teach.
    streams: the task streams it applies to (the student head's labelled and unlabelled images).
    teacher_index, student_index: the shared channels (:func:`shared_channels`).
    weight: weight of :func:`shared_joint_loss` in the total loss, per stream (times the
      stream's ``loss_weight``).
    threshold: the teacher's heatmap peak from which a shared joint is taught.
  """

  teacher_task: str
  streams: tuple[str, ...]
  teacher_index: tuple[int, ...]
  student_index: tuple[int, ...]
  weight: float
  threshold: float = 0.0

  def loss(self, student: jax.Array, teacher: jax.Array,
           joint_weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(loss, confident fraction)`` of :func:`shared_joint_loss`."""
    return shared_joint_loss(student, teacher, self.teacher_index, self.student_index,
                             joint_weights, self.threshold)
