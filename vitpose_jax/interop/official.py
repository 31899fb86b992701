"""Official ViTPose / ViTPose++ (mmpose layout), Hugging Face VitPose and MAE / timm ViT weights
into our model (docs/design.md, *Model*).

Every source is first renamed into the official mmpose layout (``backbone.blocks.{i}.attn.qkv``,
``keypoint_head.deconv_layers.{k}``, ...), then one mapper builds the model from it. The network's
width, depth, P, decoder and keypoint counts come from tensor shapes; attention heads, LayerNorm
eps and the input size (which shapes cannot tell) from the source's config, a flag, or the
published models' values, and every such assumption is reported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
from flax import nnx

from vitpose_jax import models, skeletons
from vitpose_jax.interop.files import ConvertError
from vitpose_jax.interop.resample import resample_pos_embed

FORMATS = ('mmpose', 'hf', 'mae')

# ViTPose++'s dataset index order: expert i and head i (``keypoint_head`` for 0,
# ``associate_keypoint_heads.{i-1}`` after it) belong to dataset i.
OFFICIAL_DATASETS = (
    ('coco', 'coco17'), ('aic', 'aic14'), ('mpii', 'mpii16'), ('ap10k', 'ap10k17'),
    ('apt36k', 'apt36k17'), ('wholebody', 'coco_wholebody133'),
)

# Attention heads are not visible in tensor shapes. ViTPose-S uses 12 heads of 32 channels where
# timm's / MAE's ViT-S uses 6 of 64.
_HEADS_VITPOSE = {384: 12, 768: 12, 1024: 16, 1280: 16}
_HEADS_MAE = {384: 6, 768: 12, 1024: 16, 1280: 16}
# Input sizes of the published ViTPose models, tried when a checkpoint's patch count is ambiguous.
_KNOWN_INPUTS = ((256, 192), (384, 288), (256, 256), (512, 384), (224, 224))


@dataclasses.dataclass(frozen=True)
class TaskChoice:
  """A task of the converted model: its name, the source's dataset index (expert and head), and
  its schema."""

  name: str
  index: int
  schema: str


@dataclasses.dataclass
class Imported:
  config: models.ModelConfig
  model: models.VitPose
  notes: list[str]


def parse_tasks(text: str) -> list[TaskChoice]:
  """``name=index[:schema],...``; the schema defaults to the official one of that index."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(','))):
    match = re.fullmatch(r'([A-Za-z_][\w-]*)=(\d+)(?::(.+))?', item)
    if not match:
      raise ConvertError(f'--tasks: {item!r} is not NAME=INDEX or NAME=INDEX:SCHEMA')
    name, index, schema = match.group(1), int(match.group(2)), match.group(3)
    if schema is None:
      if index >= len(OFFICIAL_DATASETS):
        raise ConvertError(f'--tasks: {item!r}: dataset index {index} has no official schema; '
                           'give one as NAME=INDEX:SCHEMA')
      schema = OFFICIAL_DATASETS[index][1]
    out.append(TaskChoice(name, index, schema))
  if not out:
    raise ConvertError('--tasks: no task given')
  names = [t.name for t in out]
  if len(set(names)) != len(names):
    raise ConvertError(f'--tasks: duplicate task names in {names}')
  return out


def detect_format(sd: dict) -> str | None:
  if 'backbone.embeddings.patch_embeddings.projection.weight' in sd:
    return 'hf'
  if 'backbone.patch_embed.proj.weight' in sd:
    return 'mmpose'
  if 'patch_embed.proj.weight' in sd:
    return 'mae'
  return None


# -- renaming into the official layout -------------------------------------------------------

_HF_HEAD = {'deconv1': 'deconv_layers.0', 'batchnorm1': 'deconv_layers.1',
            'deconv2': 'deconv_layers.3', 'batchnorm2': 'deconv_layers.4', 'conv': 'final_layer'}
_HF_BLOCK = {'layernorm_before': 'norm1', 'layernorm_after': 'norm2',
             'attention.output.dense': 'attn.proj', 'mlp': 'mlp'}


def hf_to_official(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Hugging Face ``VitPoseForPoseEstimation`` names → official names; q, k, v fused into qkv."""
  out, qkv = {}, {}
  for name, value in sd.items():
    if name.startswith('backbone.embeddings.patch_embeddings.projection.'):
      out['backbone.patch_embed.proj.' + name.rsplit('.', 1)[1]] = value
    elif name == 'backbone.embeddings.position_embeddings':
      out['backbone.pos_embed'] = value
    elif name.startswith('backbone.layernorm.'):
      out['backbone.last_norm.' + name.rsplit('.', 1)[1]] = value
    elif m := re.fullmatch(r'backbone\.encoder\.layer\.(\d+)\.attention\.attention\.'
                           r'(query|key|value)\.(weight|bias)', name):
      qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
    elif m := re.fullmatch(r'backbone\.encoder\.layer\.(\d+)\.(.+)\.(\w+)', name):
      inner = m.group(2)
      for hf, official in _HF_BLOCK.items():
        if inner == hf or inner.startswith(hf + '.'):
          inner = official + inner[len(hf):]
          break
      out[f'backbone.blocks.{m.group(1)}.{inner}.{m.group(3)}'] = value
    elif m := re.fullmatch(r'head\.(\w+)\.(\w+)', name):
      out[f'keypoint_head.{_HF_HEAD.get(m.group(1), m.group(1))}.{m.group(2)}'] = value
    else:
      out[name] = value
  for (block, kind), parts in qkv.items():
    if set(parts) != {'query', 'key', 'value'}:
      raise ConvertError(f'layer {block}: {kind} of query/key/value incomplete ({sorted(parts)})')
    out[f'backbone.blocks.{block}.attn.qkv.{kind}'] = np.concatenate(
        [parts['query'], parts['key'], parts['value']], axis=0)
  return out


# MAE's pre-training and timm's classifiers carry tensors a pose backbone has no use for.
_MAE_UNUSED = re.compile(r'(cls_token|mask_token|head\..*|fc_norm\..*|decoder.*|dist_token)$')


def mae_to_official(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
  """MAE / timm ViT names → official backbone names (``norm`` → ``last_norm``); returns the
  renamed dict and the tensors left out (cls token, classifier head, MAE decoder)."""
  out, dropped = {}, []
  for name, value in sd.items():
    if _MAE_UNUSED.match(name):
      dropped.append(name)
    elif name.startswith('norm.'):
      out['backbone.last_norm.' + name[len('norm.'):]] = value
    else:
      out['backbone.' + name] = value
  return out, dropped


# -- the official layout into our model ------------------------------------------------------


class _Source:
  """The official-layout dict; remembers which tensors were used."""

  def __init__(self, sd: dict[str, np.ndarray], origin: str):
    self.sd = sd
    self.origin = origin
    self.used: set[str] = set()

  def __contains__(self, name):
    return name in self.sd

  def get(self, name: str) -> np.ndarray:
    if name not in self.sd:
      raise ConvertError(f'{self.origin}: tensor {name!r} is missing')
    self.used.add(name)
    return self.sd[name]

  def unused(self) -> list[str]:
    return sorted(set(self.sd) - self.used)


def _indices(sd: dict, pattern: str) -> list[int]:
  regex = re.compile(pattern)
  return sorted({int(m.group(1)) for k in sd if (m := regex.fullmatch(k))})


def _head_prefixes(src: _Source) -> dict[int, str]:
  heads = {0: 'keypoint_head.'} if 'keypoint_head.final_layer.weight' in src else {}
  for k in _indices(src.sd, r'associate_keypoint_heads\.(\d+)\.final_layer\.weight'):
    heads[k + 1] = f'associate_keypoint_heads.{k}.'
  return heads


@dataclasses.dataclass(frozen=True)
class _Head:
  kind: str  # 'classic' or 'simple'
  keypoints: int
  deconvs: tuple[int, ...]  # state-dict indices of the transposed convolutions
  channels: int


def _read_head(src: _Source, prefix: str) -> _Head:
  final = src.sd[prefix + 'final_layer.weight']
  deconvs = tuple(k for k in _indices(src.sd, re.escape(prefix) + r'deconv_layers\.(\d+)\.weight')
                  if src.sd[f'{prefix}deconv_layers.{k}.weight'].ndim == 4)
  if deconvs:
    if final.shape[2:] != (1, 1):
      raise ConvertError(f'{src.origin}: {prefix}final_layer is {final.shape[2]}×{final.shape[3]}; '
                         'a deconvolution head ends in a 1×1 conv')
    channels = {src.sd[f'{prefix}deconv_layers.{k}.weight'].shape[1] for k in deconvs}
    if len(channels) != 1:
      raise ConvertError(f'{src.origin}: {prefix} deconvolutions have different widths {channels}')
    return _Head('classic', final.shape[0], deconvs, channels.pop())
  if final.shape[2:] != (3, 3):
    raise ConvertError(f'{src.origin}: {prefix}final_layer is {final.shape[2]}×{final.shape[3]} '
                       'without deconvolutions; the simple decoder has a 3×3 conv')
  return _Head('simple', final.shape[0], (), 0)


def _source_grid(num_patches: int, sizes, patch: int, origin: str) -> tuple[int, int]:
  candidates = [tuple(s) for s in sizes if s] + list(_KNOWN_INPUTS)
  for h, w in candidates:
    if (h // patch) * (w // patch) == num_patches:
      return h // patch, w // patch
  side = int(round(num_patches ** 0.5))
  if side * side == num_patches:
    return side, side
  raise ConvertError(f'{origin}: cannot tell the input size of a position embedding with '
                     f'{num_patches} patches; pass --src-image-size H,W')


def _default_tasks(heads: dict[int, _Head], shared_head: bool, origin: str) -> list[TaskChoice]:
  out = []
  by_count = {skeletons.get(s).num_keypoints: (n, i) for i, (n, s)
              in reversed(list(enumerate(OFFICIAL_DATASETS)))}
  for index, head in heads.items():
    name, schema = (OFFICIAL_DATASETS[index] if index < len(OFFICIAL_DATASETS) else (None, None))
    if schema and skeletons.get(schema).num_keypoints == head.keypoints:
      out.append(TaskChoice(name, index, schema))
    elif (len(heads) == 1 or shared_head) and head.keypoints in by_count:
      # A head shared by every expert (Hugging Face) serves the dataset it was trained for.
      name, official = by_count[head.keypoints]
      out.append(TaskChoice(name, official if shared_head else index,
                            OFFICIAL_DATASETS[official][1]))
    else:
      raise ConvertError(f'{origin}: the head of dataset index {index} has {head.keypoints} '
                         'keypoints and no official dataset matches; name its task with '
                         '--tasks NAME=INDEX:SCHEMA')
  return out


def to_model(
    sd: dict[str, np.ndarray],
    *,
    origin: str,
    fmt: str,
    tasks: Sequence[TaskChoice] | None = None,
    num_heads: int | None = None,
    eps: float = 1e-6,
    src_image_size: tuple[int, int] | None = None,
    image_size: tuple[int, int] | None = None,
    drop_headless_experts: bool = False,
    expert_dim: int = 0,
    seed: int = 0,
) -> Imported:
  """Builds our model from an official-layout dict. ``fmt`` 'mae' means a backbone alone:
  heads start fresh (seeded), and ``expert_dim`` > 0 factorizes it (every expert ← the last P
  outputs of fc2, as the official loader does)."""
  src = _Source(sd, origin)
  notes = []
  proj = src.get('backbone.patch_embed.proj.weight')
  width, patch = proj.shape[0], proj.shape[2]
  if patch < 16 and fmt == 'mae':
    # ViTPose-H starts from MAE's ViT-H/14: the official loader zero-pads the kernel to 16×16.
    pad = (16 - patch) // 2, 16 - patch - (16 - patch) // 2
    proj = np.pad(proj, ((0, 0), (0, 0), pad, pad))
    notes.append(f'patch kernel {patch}×{patch} zero-padded to 16×16 (official loader)')
    patch = 16
  depth = len(_indices(sd, r'backbone\.blocks\.(\d+)\.norm1\.weight'))
  if not depth:
    raise ConvertError(f'{origin}: no transformer blocks (backbone.blocks.N.*) found')
  hidden = src.sd['backbone.blocks.0.mlp.fc1.weight'].shape[0]
  num_experts = len(_indices(sd, r'backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight'))
  part = src.sd['backbone.blocks.0.mlp.experts.0.weight'].shape[0] if num_experts else 0
  if num_heads is None:
    table = _HEADS_MAE if fmt == 'mae' else _HEADS_VITPOSE
    if width not in table:
      raise ConvertError(f'{origin}: width {width} is not a published ViT size; pass --num-heads')
    num_heads = table[width]
    notes.append(f'{num_heads} attention heads (the published models of width {width})')

  pos = src.get('backbone.pos_embed')
  grid = _source_grid(pos.shape[1] - 1, (src_image_size, image_size), patch, origin)
  if image_size is None:
    image_size = (256, 192) if fmt == 'mae' else (grid[0] * patch, grid[1] * patch)

  shared_head = fmt == 'hf'
  prefixes = {} if fmt == 'mae' else _head_prefixes(src)
  heads = {i: _read_head(src, p) for i, p in prefixes.items()}
  if fmt != 'mae' and not heads:
    raise ConvertError(f'{origin}: no keypoint head (keypoint_head.final_layer.weight) found')
  if tasks is None:
    tasks = [TaskChoice('coco', 0, 'coco17')] if fmt == 'mae' else _default_tasks(
        heads, shared_head, origin)
  task_heads = {}
  for t in tasks:
    if fmt == 'mae':
      continue
    key = 0 if shared_head else t.index
    if key not in heads:
      raise ConvertError(f'{origin}: task {t.name!r} asks for dataset index {t.index}, which has '
                         f'no head (heads at indices {sorted(heads)})')
    task_heads[t.name] = (heads[key], prefixes[key])

  factorized = num_experts > 0 or (fmt == 'mae' and expert_dim > 0)
  source_experts = []  # the checkpoint's expert index of each of our experts
  if fmt == 'mae' and expert_dim:
    part, num_experts = expert_dim, len(tasks)
    experts = {t.name: i for i, t in enumerate(tasks)}
  elif factorized:
    for t in tasks:
      if t.index >= num_experts:
        raise ConvertError(f'{origin}: task {t.name!r} asks for dataset index {t.index}; the '
                           f'checkpoint has {num_experts} experts')
    kept = sorted({t.index for t in tasks}) if drop_headless_experts else range(num_experts)
    position = {index: i for i, index in enumerate(kept)}
    experts = {t.name: position[t.index] for t in tasks}
    dropped = sorted(set(range(num_experts)) - set(kept))
    if dropped:
      notes.append(f'experts without a task dropped: dataset indices {dropped}')
    elif len({t.index for t in tasks}) < num_experts:
      notes.append(f'experts without a task kept: dataset indices '
                   f'{sorted(set(range(num_experts)) - {t.index for t in tasks})}')
    num_experts = len(kept)
    source_experts = list(kept)
  else:
    # One expert in a Hugging Face checkpoint is the plain MLP (its num_experts = 1).
    experts = {t.name: 0 for t in tasks}
    part = num_experts = 0

  specs = []
  for t in tasks:
    schema = skeletons.get(t.schema)
    head = task_heads.get(t.name)
    if head and head[0].keypoints != schema.num_keypoints:
      raise ConvertError(
          f'{origin}: task {t.name!r} has schema {schema.name} with {schema.num_keypoints} '
          f'keypoints but the head of dataset index {t.index} ({head[1]}) has '
          f'{head[0].keypoints}')
    kind = head[0].kind if head else 'classic'
    specs.append(models.TaskSpec(t.name, schema, experts[t.name], kind))
  classic = {h.channels for h, _ in task_heads.values() if h.kind == 'classic'}
  layers = {len(h.deconvs) for h, _ in task_heads.values() if h.kind == 'classic'}
  if len(classic) > 1 or len(layers) > 1:
    raise ConvertError(f'{origin}: the heads differ in decoder width {sorted(classic)} or depth '
                       f'{sorted(layers)}; one model holds one decoder geometry')
  variant = next((name for name in ('S', 'B', 'L', 'H')
                  if (models.VARIANTS[name].width, models.VARIANTS[name].depth) == (width, depth)),
                 'custom')
  config = models.ModelConfig(
      tasks=tuple(specs), variant=variant, width=width, depth=depth, num_heads=num_heads,
      mlp_ratio=hidden / width, patch_size=patch, image_size=tuple(image_size),
      expert_dim=part if factorized else 0, num_experts=num_experts if factorized else 0,
      deconv_channels=classic.pop() if classic else models.VARIANTS['B'].deconv_channels,
      num_deconv_layers=layers.pop() if layers else 2, eps=eps,
      drop_path=models.VARIANTS[variant].drop_path if variant != 'custom' else 0.0)
  dst_grid = config.grid_size
  if dst_grid != grid:
    notes.append(f'position embedding resampled {grid[0]}×{grid[1]} → {dst_grid[0]}×{dst_grid[1]} '
                 '(bicubic, torch semantics)')
  model = models.create_model(config, seed=seed)
  params = nnx.to_pure_dict(nnx.state(model))
  _fill_backbone(src, params['backbone'], config, proj, resample_pos_embed(pos, grid, dst_grid),
                 fmt == 'mae' and factorized, source_experts)
  for name, (head, prefix) in task_heads.items():
    _fill_head(src, params['heads'][name], head, prefix)
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  unused = src.unused()
  if unused:
    notes.append(f'{len(unused)} tensors not used: {", ".join(unused[:8])}'
                 + (', ...' if len(unused) > 8 else ''))
  return Imported(config, model, notes)


def _put(dst: dict, key, value: np.ndarray, name: str, origin: str):
  want = tuple(np.shape(dst[key]))
  if value.shape != want:
    raise ConvertError(f'{origin}: {name} gives shape {value.shape}, the model needs {want}')
  dst[key] = value.astype(np.float32)


def _linear(src: _Source, dst: dict, name: str, rows: slice | None = None):
  weight = src.get(name + '.weight')
  bias = src.get(name + '.bias') if name + '.bias' in src else np.zeros(weight.shape[0])
  if rows is not None:
    weight, bias = weight[rows], bias[rows]
  _put(dst, 'kernel', weight.T, name + '.weight', src.origin)  # torch (out, in) → (in, out)
  _put(dst, 'bias', bias, name + '.bias', src.origin)


def _norm(src: _Source, dst: dict, name: str):
  _put(dst, 'scale', src.get(name + '.weight'), name + '.weight', src.origin)
  _put(dst, 'bias', src.get(name + '.bias'), name + '.bias', src.origin)


def _fill_backbone(src, dst, config, proj, pos, split_fc2, source_experts):
  origin = src.origin
  _put(dst['patch_embed']['proj'], 'kernel', proj.transpose(2, 3, 1, 0),
       'backbone.patch_embed.proj.weight', origin)
  _put(dst['patch_embed']['proj'], 'bias', src.get('backbone.patch_embed.proj.bias'),
       'backbone.patch_embed.proj.bias', origin)
  _put(dst, 'pos_embed', pos, 'backbone.pos_embed', origin)
  _norm(src, dst['last_norm'], 'backbone.last_norm')
  keep = config.width - config.expert_dim
  for i, block in dst['blocks'].items():
    prefix = f'backbone.blocks.{i}.'
    _norm(src, block['norm1'], prefix + 'norm1')
    _norm(src, block['norm2'], prefix + 'norm2')
    _linear(src, block['attn']['qkv'], prefix + 'attn.qkv')
    _linear(src, block['attn']['proj'], prefix + 'attn.proj')
    _linear(src, block['mlp']['fc1'], prefix + 'mlp.fc1')
    if split_fc2:
      _linear(src, block['mlp']['fc2'], prefix + 'mlp.fc2', slice(0, keep))
      for e in block['mlp']['experts']:
        _linear(src, block['mlp']['experts'][e], prefix + 'mlp.fc2', slice(keep, None))
      continue
    _linear(src, block['mlp']['fc2'], prefix + 'mlp.fc2')
    for position, index in enumerate(source_experts):
      _linear(src, block['mlp']['experts'][position], f'{prefix}mlp.experts.{index}')


def _fill_head(src: _Source, dst: dict, head: _Head, prefix: str):
  origin = src.origin
  for layer, k in enumerate(head.deconvs):
    name = f'{prefix}deconv_layers.{k}'
    # torch ConvTranspose2d (in, out, kh, kw) → our (kh, kw, out, in), no flip.
    _put(dst['deconv_layers'][layer], 'kernel', src.get(name + '.weight').transpose(2, 3, 1, 0),
         name + '.weight', origin)
    bn = f'{prefix}deconv_layers.{k + 1}'
    norm = dst['deconv_norms'][layer]
    for ours, theirs in (('scale', 'weight'), ('bias', 'bias'), ('mean', 'running_mean'),
                         ('var', 'running_var')):
      _put(norm, ours, src.get(f'{bn}.{theirs}'), f'{bn}.{theirs}', origin)
  name = prefix + 'final_layer'
  _put(dst['final_layer'], 'kernel', src.get(name + '.weight').transpose(2, 3, 1, 0),
       name + '.weight', origin)
  _put(dst['final_layer'], 'bias', src.get(name + '.bias'), name + '.bias', origin)
