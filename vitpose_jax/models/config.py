"""The model's configuration: variants, tasks, and its ``model.json`` form (docs/design.md)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from vitpose_jax import codec, skeletons
from vitpose_jax.skeletons import Schema


@dataclasses.dataclass(frozen=True)
class Variant:
  width: int
  depth: int
  num_heads: int
  expert_dim: int  # P: output features of each task's expert in fc2.
  drop_path: float
  layer_decay: float  # single-task recipe
  layer_decay_multitask: float  # ViTPose++ recipe
  deconv_channels: int = 256


# ViTPose (Xu et al., NeurIPS 2022, Tab. 1 and the official configs) and ViTPose++ (TPAMI 2023).
# The released ViTPose++-S weights have P = 96 although its config says 192. The three tiny
# variants are ours, for CPU tests and demos; they shrink the decoder with the backbone.
VARIANTS: dict[str, Variant] = {
    'S': Variant(384, 12, 12, 96, 0.1, 0.8, 0.8),
    'B': Variant(768, 12, 12, 192, 0.3, 0.75, 0.75),
    'L': Variant(1024, 24, 16, 256, 0.5, 0.8, 0.8),
    'H': Variant(1280, 32, 16, 320, 0.55, 0.85, 0.8),
    'Ti': Variant(192, 12, 3, 48, 0.1, 0.8, 0.8, deconv_channels=128),
    'micro': Variant(96, 4, 3, 24, 0.0, 0.8, 0.8, deconv_channels=32),
    'nano': Variant(32, 2, 2, 8, 0.0, 0.8, 0.8, deconv_channels=16),
}

DECODERS = ('classic', 'simple', 'sapiens')
DTYPES = ('float32', 'bfloat16', 'float16')
ATTENTION = ('auto', 'xla', 'cudnn')


# Schema fields that document a schema (where its sigmas come from, the source dataset's names)
# without changing what a model computes, how it trains or how it is scored.
DESCRIPTIVE_SCHEMA_FIELDS = ('sigma_note', 'source_names')


def patch_grid(image_size: tuple[int, int], patch_size: int, padding: int) -> tuple[int, int]:
  """(rows, cols) of patch tokens of an (H, W) input: the patch convolution's output size."""
  return tuple((s + 2 * padding - patch_size) // patch_size + 1 for s in image_size)


class ModelConfigError(ValueError):
  """A model configuration or model.json is inconsistent; the message names the field."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task's slice of the model: its schema, the expert it routes through, its head type."""

  name: str
  schema: Schema
  expert: int = 0
  head: str = 'classic'

  @property
  def num_keypoints(self) -> int:
    return self.schema.num_keypoints


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to build the network; serialises to ``model.json``.

  ``expert_dim`` (P) = 0 gives a dense ViT (fc2 has all ``width`` outputs, no experts). Otherwise
  every block's fc2 has ``width - P`` shared outputs and ``num_experts`` experts of P outputs,
  concatenated shared-first. ``image_size`` and ``heatmap_size`` are (H, W).
  ``num_knowledge_tokens`` (n) learnable tokens per task join the sequence after the patch
  embedding and are dropped before the decoder (docs/design.md); 0 (the default) means none.
  ``knowledge_source_width`` > 0 makes them another model's frozen tokens of that width (a
  distillation student's), mapped by a learned linear bridge (none when the widths match).
  ``attention``: 'xla' (XLA's einsum-softmax-einsum, every backend), 'cudnn' (cuDNN's fused
  flash attention: NVIDIA GPUs of compute capability >= 8.0, bf16/fp16, head width a multiple of
  8 up to 128) or 'auto' (cuDNN where it applies, else XLA). Both compute the same function.
  It is the portable request: :func:`vitpose_jax.backend.resolve_kernels` turns it into the
  kernels of the device the model is built for.
  ``heatmap_sigma`` and ``blur_kernel_size``: the codec's target σ (heatmap pixels) and decoding
  blur; :attr:`codec` is the whole record, written to ``model.json`` as ``codec``.
  ``pos_embed_cls_slot``: the position embedding's layout. True (ViTPose): (1, 1 + L, C), its
  first (cls) slot added to every patch token, as the official ViTPose does without a cls token
  in the sequence. False (Sapiens' ViT, ``with_cls_token=False``): (1, L, C), one vector per
  patch. ``model.json`` holds it only when False, so files written before it existed, and
  every file of a cls-slot model, are unchanged.
  Heads (``TaskSpec.head``): 'classic' (ViTPose's deconvolutions + BatchNorm + ReLU), 'simple'
  (bilinear ×4 + 3×3 conv) or 'sapiens' (Sapiens' HeatmapHead: ``num_deconv_layers``
  deconvolutions, then two 1×1 convs, each followed by InstanceNorm and SiLU, all
  ``deconv_channels`` wide).
  """

  tasks: tuple[TaskSpec, ...]
  variant: str = 'custom'
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_padding: int = 2
  image_size: tuple[int, int] = (256, 192)
  expert_dim: int = 0
  num_experts: int = 0
  deconv_channels: int = 256
  num_deconv_layers: int = 2
  eps: float = 1e-6
  drop_path: float = 0.0
  remat: bool = False
  dtype: str = 'float32'
  attention: str = 'auto'
  num_knowledge_tokens: int = 0
  knowledge_source_width: int = 0
  heatmap_sigma: float = 2.0
  blur_kernel_size: int = 11
  pos_embed_cls_slot: bool = True

  def __post_init__(self):
    def fail(msg):
      raise ModelConfigError(f'model config: {msg}')

    if not self.tasks:
      fail('needs at least one task')
    names = [t.name for t in self.tasks]
    if len(set(names)) != len(names):
      fail(f'duplicate task names in {names}')
    for name in ('width', 'depth', 'num_heads', 'patch_size'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(f'{name} {value!r} must be a positive integer')
    if any(s % self.patch_size for s in self.image_size):
      # The heatmap is 4× the token grid and the codec stretches it over the whole input: an
      # input the patches do not tile would put every decoded keypoint off by the remainder.
      fail(f'image_size {tuple(self.image_size)} must be a multiple of the patch size '
           f'{self.patch_size} on each side')
    if self.width % self.num_heads:
      fail(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    if not 0 <= self.expert_dim < self.width:
      fail(f'expert_dim (P) {self.expert_dim} must be in [0, width={self.width})')
    if self.dtype not in DTYPES:
      fail(f'dtype {self.dtype!r} is not one of {DTYPES}')
    if self.attention not in ATTENTION:
      fail(f'attention {self.attention!r} is not one of {ATTENTION}')
    if self.num_knowledge_tokens < 0:
      fail(f'num_knowledge_tokens {self.num_knowledge_tokens} must not be negative')
    if self.knowledge_source_width < 0 or (self.knowledge_source_width
                                           and not self.num_knowledge_tokens):
      fail(f'knowledge_source_width {self.knowledge_source_width} needs num_knowledge_tokens > 0')
    if not isinstance(self.pos_embed_cls_slot, bool):
      fail(f'pos_embed_cls_slot {self.pos_embed_cls_slot!r} must be true or false')
    if not 0.0 <= self.drop_path < 1.0:
      fail(f'drop_path {self.drop_path} must be in [0, 1)')
    for t in self.tasks:
      if t.head not in DECODERS:
        fail(f'task {t.name!r}: head {t.head!r} is not one of {DECODERS}')
      if self.expert_dim:
        if not 0 <= t.expert < self.num_experts:
          fail(f'task {t.name!r}: expert {t.expert} is out of range for {self.num_experts} experts')
    if self.expert_dim and self.num_experts < 1:
      fail(f'expert_dim {self.expert_dim} needs num_experts >= 1')
    if not self.expert_dim and self.num_experts:
      fail(f'num_experts {self.num_experts} needs expert_dim (P) > 0')
    h, w = self.grid_size
    if h < 1 or w < 1:
      fail(f'image_size {self.image_size} is too small for patch size {self.patch_size}')
    try:
      codec.UDPHeatmap(self.image_size, self.heatmap_size, self.heatmap_sigma,
                       self.blur_kernel_size)
    except ValueError as e:
      fail(str(e))

  @property
  def factorized(self) -> bool:
    return self.expert_dim > 0

  @property
  def grid_size(self) -> tuple[int, int]:
    """Patch tokens (rows, cols): 256×192 with patch 16 and padding 2 gives 16×12."""
    return patch_grid(self.image_size, self.patch_size, self.patch_padding)

  @property
  def num_patches(self) -> int:
    h, w = self.grid_size
    return h * w

  @property
  def heatmap_size(self) -> tuple[int, int]:
    """(h, w): both decoders upsample the token grid ×4 (classic: two stride-2 deconvs)."""
    h, w = self.grid_size
    return (h * 4, w * 4)

  @property
  def codec(self) -> codec.UDPHeatmap:
    """The heatmap codec of this model: its input and heatmap sizes, σ and blur kernel."""
    return codec.UDPHeatmap(self.image_size, self.heatmap_size, self.heatmap_sigma,
                            self.blur_kernel_size)

  def task(self, name: str) -> TaskSpec:
    for t in self.tasks:
      if t.name == name:
        return t
    raise ModelConfigError(f'unknown task {name!r}; the model has {[t.name for t in self.tasks]}')

  @property
  def task_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tasks)

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in ('tasks', *_CODEC_FIELDS)}
    if self.pos_embed_cls_slot:
      del out['pos_embed_cls_slot']  # the default, left out: model.json as before the field
    out['image_size'] = list(self.image_size)
    out['heatmap_size'] = list(self.heatmap_size)
    out['codec'] = self.codec.to_dict()
    out['tasks'] = {
        t.name: {'schema': t.schema.to_dict(), 'expert': t.expert, 'head': t.head}
        for t in self.tasks
    }
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1)

  def differences(self, other: ModelConfig, *, ignore: Sequence[str] = ()) -> list[str]:
    """What ``other`` changes in this model, one entry per differing field as a dotted path:
    ``'width 768 → 384'``, ``'tasks.aic removed'``, ``'tasks.coco.schema.sigmas [0.026, …] →
    [0.03, …]'``. Both sides are compared in their ``model.json`` form after defaults are filled
    in, so a file written before a field existed does not differ by lacking it. A schema's notes
    (``DESCRIPTIVE_SCHEMA_FIELDS``) are not compared: the network, its targets and its scores do
    not depend on them. ``ignore``: top-level fields also left out. Empty when the models are the
    same."""
    old, new = (json.loads(json.dumps(c.to_dict())) for c in (self, other))
    for side in (old, new):
      side.setdefault('pos_embed_cls_slot', True)  # written only when False
      for name in ignore:
        side.pop(name, None)
      for task in side['tasks'].values():
        for name in DESCRIPTIVE_SCHEMA_FIELDS:
          task['schema'].pop(name, None)
    return json_differences(old, new)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any], *, source: str = 'model.json',
                sigma: float = 2.0) -> ModelConfig:
    """The config of a ``model.json`` mapping. One written before the codec was recorded gets
    the codec it was trained and evaluated with: ``sigma`` (the run's ``data.sigma``, which
    :meth:`load` reads from ``config.json`` beside it) and blur kernel 11."""
    data = dict(data)
    fields = {f.name for f in dataclasses.fields(cls)} - set(_CODEC_FIELDS)
    data.pop('heatmap_size', None)  # derived; written for readers of the file
    record = data.pop('codec', None)
    unknown = sorted(set(data) - fields)
    if unknown:
      raise ModelConfigError(f'{source}: unknown field(s) {unknown}')
    if 'tasks' not in data or not isinstance(data['tasks'], Mapping):
      raise ModelConfigError(f'{source}: "tasks" must map task names to their schema and expert')
    tasks = []
    for name, spec in data['tasks'].items():
      entry = spec.get('schema')
      try:
        schema = (skeletons.schema_from_dict(entry, source=f'{source} tasks.{name}.schema')
                    if isinstance(entry, Mapping) else skeletons.get(entry))
      except skeletons.SchemaError as e:
        raise ModelConfigError(str(e)) from None
      tasks.append(TaskSpec(name, schema, int(spec.get('expert', 0)),
                            spec.get('head', 'classic')))
    data['tasks'] = tuple(tasks)
    if 'image_size' in data:
      data['image_size'] = tuple(data['image_size'])
    try:
      config = cls(**data)
    except ModelConfigError as e:
      raise ModelConfigError(f'{source}: {e}') from None
    if record is None:
      return config.replace(heatmap_sigma=sigma)
    if not isinstance(record, Mapping):
      raise ModelConfigError(f'{source}: "codec" must be an object, got {record!r:.40}')
    try:
      record = codec.UDPHeatmap.from_dict(record)
    except (TypeError, ValueError) as e:
      raise ModelConfigError(f'{source}: {e}') from None
    for name, want in (('input_size', config.image_size), ('heatmap_size', config.heatmap_size)):
      if getattr(record, name) != tuple(want):
        raise ModelConfigError(f'{source}: codec.{name} {list(getattr(record, name))} is not the '
                               f"network's {list(want)}")
    return config.replace(heatmap_sigma=record.sigma, blur_kernel_size=record.blur_kernel_size)

  @classmethod
  def from_json(cls, text: str, *, source: str = 'model.json') -> ModelConfig:
    return cls.from_dict(json.loads(text), source=source)

  def save(self, path: str | os.PathLike[str]):
    with open(path, 'w') as f:
      f.write(self.to_json())

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> ModelConfig:
    """From ``model.json``, a run directory holding it, or ``zoo:<name>`` (a shipped model). A
    ``model.json`` without a ``codec`` takes σ from the ``data.sigma`` of the ``config.json``
    beside it, if there is one (see :meth:`from_dict`)."""
    from vitpose_jax import zoo

    path = zoo.resolve(path)
    if os.path.isdir(path):
      path = os.path.join(path, 'model.json')
    try:
      with open(path) as f:
        text = f.read()
    except FileNotFoundError:
      raise ModelConfigError(f'{path}: not found (a run directory holds model.json)') from None
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ModelConfigError(f'{path}: not valid JSON ({e})') from None
    sigma = 2.0
    if isinstance(data, Mapping) and 'codec' not in data:
      sigma = _run_sigma(os.path.join(os.path.dirname(path), 'config.json'), sigma)
    return cls.from_dict(data, source=path, sigma=sigma)


# ModelConfig fields that model.json holds inside its "codec" record.
_CODEC_FIELDS = ('heatmap_sigma', 'blur_kernel_size')


def _run_sigma(path: str, default: float) -> float:
  """``data.sigma`` of the run config at ``path``, or ``default`` where it has none."""
  try:
    with open(path) as f:
      sigma = json.load(f)['data']['sigma']
  except (OSError, json.JSONDecodeError, KeyError, TypeError):
    return default
  if not isinstance(sigma, (int, float)) or isinstance(sigma, bool):
    raise ModelConfigError(f'{path}: data.sigma {sigma!r} is not a number')
  return float(sigma)


def _short(value: Any) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:36].rstrip() + ' …' + text[-1]


def json_differences(old: Any, new: Any, path: str = '') -> list[str]:
  """Where two JSON values differ, one entry per differing leaf or key as a dotted path below
  ``path``: ``'a.b 1 → 2'`` (values shortened to about 40 characters), ``'a.c removed'``,
  ``'a.d added'``. Empty when they are equal."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
      where = f'{path}.{key}' if path else key
      if key not in new:
        out.append(f'{where} removed')
      elif key not in old:
        out.append(f'{where} added')
      else:
        out += json_differences(old[key], new[key], where)
    return out
  return [] if old == new else [f'{path} {_short(old)} → {_short(new)}']


def make_tasks(
    tasks: Mapping[str, str | Schema] | Sequence[str],
    *,
    head: str = 'classic',
) -> tuple[TaskSpec, ...]:
  """Task specs from ``{task: schema}`` (or task names that are schema names), experts in order."""
  if not isinstance(tasks, Mapping):
    tasks = {t: t for t in tasks}
  return tuple(
      TaskSpec(name, skeletons.get(schema), expert=i, head=head)
      for i, (name, schema) in enumerate(tasks.items())
  )


def model_config(
    variant: str,
    tasks: Mapping[str, str | Schema] | Sequence[str] | Sequence[TaskSpec],
    *,
    factorized: bool = True,
    decoder: str = 'classic',
    **overrides,
) -> ModelConfig:
  """A config for a named variant (see ``VARIANTS``).

  ``factorized=True`` gives one expert per task (P from the variant table); ``False`` a dense ViT.
  ``overrides`` set any :class:`ModelConfig` field (e.g. ``image_size``, ``dtype``, ``remat``).
  """
  if variant not in VARIANTS:
    raise ModelConfigError(f'unknown variant {variant!r}; known: {", ".join(VARIANTS)}')
  v = VARIANTS[variant]
  if tasks and all(isinstance(t, TaskSpec) for t in tasks):
    specs = tuple(tasks)
  else:
    specs = make_tasks(tasks, head=decoder)
  fields = dict(
      variant=variant, width=v.width, depth=v.depth, num_heads=v.num_heads,
      deconv_channels=v.deconv_channels, drop_path=v.drop_path,
  )
  if factorized:
    fields.update(expert_dim=v.expert_dim, num_experts=max(t.expert for t in specs) + 1)
  else:
    specs = tuple(dataclasses.replace(t, expert=0) for t in specs)
  fields.update(overrides)
  return ModelConfig(tasks=specs, **fields)
