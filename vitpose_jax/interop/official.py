"""Official ViTPose / ViTPose++ (mmpose layout), Hugging Face VitPose, MAE / timm ViT and Meta's
Sapiens pose weights into our model (docs/design.md, *Model*).

Every source is first renamed into the official mmpose layout (``backbone.blocks.{i}.attn.qkv``,
``keypoint_head.deconv_layers.{k}``, ...), then one mapper builds the model from it. The network's
width, depth, P, decoder and keypoint counts come from tensor shapes; attention heads, LayerNorm
eps and the input size (which shapes cannot tell) from the source's config, a flag, or the
published models' values, and every such assumption is reported.

Sapiens (facebookresearch/sapiens) is a plain ViT without a cls slot in its position embedding
(``pos_embed_cls_slot=False``) and the 'sapiens' heatmap head; its pose models are trained at
1024×768 with σ 6 heatmaps of 256×192. Its code and weights are licensed CC BY-NC 4.0
(non-commercial use only): a converted Sapiens model carries that licence, and the import says so
in its notes.
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
from vitpose_jax.models.config import patch_grid

FORMATS = ('mmpose', 'hf', 'mae', 'sapiens')

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

SAPIENS_LICENCE = ('Sapiens code and weights are licensed CC BY-NC 4.0 (non-commercial use only); '
                   'the converted model carries that licence')
# mmpretrain's arch table: Sapiens 0.3B, 0.6B, 1B and 2B.
_HEADS_SAPIENS = {1024: 16, 1280: 16, 1536: 24, 1920: 32}
_DEPTH_SAPIENS = {1024: 24, 1280: 32, 1536: 40, 1920: 48}
# ViT-S/B/L/H (ViTPose, MAE, timm).
_DEPTH_VIT = {384: 12, 768: 12, 1024: 24, 1280: 32}
# Every released Sapiens pose model (configs/sapiens_pose/*/*-1024x768.py): its input (H, W), and
# ``patch_cfg=dict(padding=2)`` (ModelConfig's default patch_padding too).
SAPIENS_IMAGE_SIZE = (1024, 768)
_SAPIENS_PATCH_PADDING = 2
# Sapiens' pose tasks by keypoint count: its COCO, COCO-WholeBody and Goliath models.
_SAPIENS_TASKS = {17: ('coco', 'coco17'), 133: ('wholebody', 'coco_wholebody133'),
                  308: ('goliath', 'goliath308')}
# mmpose's HeatmapHead as Sapiens configures it: two 1×1 conv layers after the deconvolutions.
_SAPIENS_CONVS = 2


@dataclasses.dataclass(frozen=True)
class TaskChoice:
  """A task of the converted model: its name, the source's dataset index (expert and head), and
  its schema (None: the source's own, see :func:`to_model`)."""

  name: str
  index: int
  schema: str | None = None


@dataclasses.dataclass
class Imported:
  config: models.ModelConfig
  model: models.VitPose
  notes: list[str]


def parse_tasks(text: str) -> list[TaskChoice]:
  """``name=index[:schema],...``; a task without a schema takes the source's own for that index
  (:func:`to_model`)."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(','))):
    match = re.fullmatch(r'([A-Za-z_][\w-]*)=(\d+)(?::(.+))?', item)
    if not match:
      raise ConvertError(f'--tasks: {item!r} is not NAME=INDEX or NAME=INDEX:SCHEMA')
    out.append(TaskChoice(match.group(1), int(match.group(2)), match.group(3)))
  if not out:
    raise ConvertError('--tasks: no task given')
  names = [t.name for t in out]
  if len(set(names)) != len(names):
    raise ConvertError(f'--tasks: duplicate task names in {names}')
  return out


def detect_format(sd: dict) -> str | None:
  if 'backbone.embeddings.patch_embeddings.projection.weight' in sd:
    return 'hf'
  if {'backbone.patch_embed.projection.weight', 'backbone.layers.0.ln1.weight'} <= set(sd):
    return 'sapiens'
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


# Sapiens' names (mmpretrain's VisionTransformer, mmpose's HeatmapHead) against the official ones,
# as prefixes; ``{i}`` is a block index. mmcv's FFN is Sequential(Sequential(fc1, GELU, Dropout),
# fc2, Dropout), hence ``ffn.layers.0.0`` and ``ffn.layers.1``; ``ln1`` outside the blocks is the
# final norm. The head keeps its inner names (``deconv_layers.{0,3}``, ``conv_layers.{0,3}``,
# ``final_layer``): torch and TorchScript/torch.export files of the whole pose estimator carry the
# same ``backbone.``/``head.`` names.
_SAPIENS_LAYOUT = (
    ('backbone.patch_embed.projection.', 'backbone.patch_embed.proj.'),
    ('backbone.ln1.', 'backbone.last_norm.'),
    ('backbone.layers.{i}.ln1.', 'backbone.blocks.{i}.norm1.'),
    ('backbone.layers.{i}.ln2.', 'backbone.blocks.{i}.norm2.'),
    ('backbone.layers.{i}.attn.', 'backbone.blocks.{i}.attn.'),
    ('backbone.layers.{i}.ffn.layers.0.0.', 'backbone.blocks.{i}.mlp.fc1.'),
    ('backbone.layers.{i}.ffn.layers.1.', 'backbone.blocks.{i}.mlp.fc2.'),
    ('head.', 'keypoint_head.'),
)


def _prefix_rules(pairs, reverse: bool) -> list[tuple[re.Pattern, str]]:
  rules = []
  for a, b in pairs:
    src, dst = (b, a) if reverse else (a, b)
    rules.append((re.compile(re.escape(src).replace(r'\{i\}', r'(?P<i>\d+)')), dst))
  return rules


def _rename(name: str, rules: list[tuple[re.Pattern, str]]) -> str:
  for regex, template in rules:
    if m := regex.match(name):
      return template.format(**m.groupdict()) + name[m.end():]
  return name


_FROM_SAPIENS = _prefix_rules(_SAPIENS_LAYOUT, reverse=False)
_TO_SAPIENS = _prefix_rules(_SAPIENS_LAYOUT, reverse=True)


def sapiens_to_official(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Sapiens pose-checkpoint names → official names (the head's under ``keypoint_head.``, its 1×1
  convs as ``conv_layers.{0,3}``); names outside that layout are kept as they are."""
  return {_rename(name, _FROM_SAPIENS): value for name, value in sd.items()}


def sapiens_name(name: str) -> str:
  """The Sapiens name of an official-layout name: what errors and notes call a tensor."""
  return _rename(name, _TO_SAPIENS)


def sapiens_sigma(heatmap_size: tuple[int, int]) -> float:
  """The codec σ (heatmap pixels) of a converted Sapiens model with heatmaps of ``heatmap_size``
  (h, w). Sapiens trains with σ 6 at 256×192 (its 1024×768 input); ViTPose with σ 2 at 64×48.
  At another size σ keeps the Gaussian's share of the heatmap, 6·h/256, but not below 2, so the
  small heatmaps of a small input still have a peak a few pixels wide: 6 at 256×192, 3 at
  128×96, 2 at 64×48."""
  return max(2.0, 6.0 * heatmap_size[0] / 256)


# -- the official layout into our model ------------------------------------------------------


class _Source:
  """The official-layout dict; remembers which tensors were used. ``label`` names a tensor as the
  source file does, for errors and notes."""

  def __init__(self, sd: dict[str, np.ndarray], origin: str, label=lambda name: name):
    self.sd = sd
    self.origin = origin
    self.label = label
    self.used: set[str] = set()
    self.zero_biases: list[str] = []  # linear biases the file lacks, taken as zero

  def __contains__(self, name):
    return name in self.sd

  def peek(self, name: str) -> np.ndarray:
    """The tensor, without counting it as used (it is read for its shape)."""
    if name not in self.sd:
      raise ConvertError(f'{self.origin}: tensor {self.label(name)!r} is missing')
    return self.sd[name]

  def get(self, name: str) -> np.ndarray:
    value = self.peek(name)
    self.used.add(name)
    return value

  def unused(self) -> list[str]:
    return sorted(self.label(name) for name in set(self.sd) - self.used)


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
  kind: str  # 'classic', 'simple' or 'sapiens'
  keypoints: int
  deconvs: tuple[int, ...]  # state-dict indices of the transposed convolutions
  channels: int
  convs: tuple[int, ...] = ()  # state-dict indices of the 1×1 convolutions ('sapiens')


def _read_head(src: _Source, prefix: str, fmt: str) -> _Head:
  label = src.label
  final = src.peek(prefix + 'final_layer.weight')
  deconvs = tuple(k for k in _indices(src.sd, re.escape(prefix) + r'deconv_layers\.(\d+)\.weight')
                  if src.sd[f'{prefix}deconv_layers.{k}.weight'].ndim == 4)
  if fmt == 'sapiens':
    convs = tuple(_indices(src.sd, re.escape(prefix) + r'conv_layers\.(\d+)\.weight'))
    # The model's heatmaps are 4× the token grid: two stride-2 deconvolutions, as in every
    # released Sapiens pose model.
    if len(deconvs) != 2 or len(convs) != _SAPIENS_CONVS:
      raise ConvertError(f'{src.origin}: {label(prefix)}deconv_layers has {len(deconvs)} '
                         f'deconvolutions and {label(prefix)}conv_layers {len(convs)} '
                         f'convolutions; the sapiens head has 2 and {_SAPIENS_CONVS}')
    widths = {src.sd[f'{prefix}deconv_layers.{k}.weight'].shape[1] for k in deconvs}
    widths |= {src.sd[f'{prefix}conv_layers.{k}.weight'].shape[0] for k in convs}
    if len(widths) != 1:
      raise ConvertError(f'{src.origin}: {label(prefix)}deconv_layers and conv_layers have '
                         f'different widths {sorted(widths)}; the sapiens head has one')
    return _Head('sapiens', final.shape[0], deconvs, widths.pop(), convs)
  if deconvs:
    if final.shape[2:] != (1, 1):
      raise ConvertError(f'{src.origin}: {label(prefix)}final_layer is {final.shape[2]}×'
                         f'{final.shape[3]}; a deconvolution head ends in a 1×1 conv')
    channels = {src.sd[f'{prefix}deconv_layers.{k}.weight'].shape[1] for k in deconvs}
    if len(channels) != 1:
      raise ConvertError(f'{src.origin}: {label(prefix)} deconvolutions have different widths '
                         f'{channels}')
    return _Head('classic', final.shape[0], deconvs, channels.pop())
  if final.shape[2:] != (3, 3):
    raise ConvertError(f'{src.origin}: {label(prefix)}final_layer is {final.shape[2]}×'
                       f'{final.shape[3]} without deconvolutions; the simple decoder has a 3×3 conv')
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


def _sapiens_pos_embed(src: _Source, size: tuple[int, int],
                       patch: int) -> tuple[np.ndarray, tuple[int, int], list[str]]:
  """Sapiens' position embedding (1, rows·cols, C) for the token grid of a ``size`` input, the
  grid, and notes. Its length alone cannot tell the grid (3072 = 64×48 = 48×64), so the grid is
  the input size's. A leading cls slot (rows·cols + 1 entries, as in an mmpretrain ViT built
  with a cls token) is dropped, as Sapiens' own loader drops it."""
  pos = src.get('backbone.pos_embed')
  grid = patch_grid(size, patch, _SAPIENS_PATCH_PADDING)
  n = grid[0] * grid[1]
  if pos.ndim == 3 and pos.shape[1] == n:
    return pos, grid, []
  if pos.ndim == 3 and pos.shape[1] == n + 1:
    return pos[:, 1:], grid, [f'{src.label("backbone.pos_embed")} has a cls slot before its '
                              f'{grid[0]}×{grid[1]} grid: dropped (the model has none)']
  raise ConvertError(f'{src.origin}: {src.label("backbone.pos_embed")} has shape {pos.shape}, '
                     f'not the {grid[0]}×{grid[1]} grid of a {size[0]}×{size[1]} input ({n} '
                     f'positions, or {n + 1} with a cls slot); pass the input size it was '
                     'trained at as --src-image-size H,W')


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


def _sapiens_task(src: _Source, heads: dict[int, _Head]) -> tuple[str, str]:
  """(task name, schema) of Sapiens' one head, by its keypoint count."""
  keypoints = heads[0].keypoints
  if keypoints not in _SAPIENS_TASKS:
    known = ', '.join(f'{k} ({schema})' for k, (_, schema) in _SAPIENS_TASKS.items())
    raise ConvertError(f'{src.origin}: {src.label("keypoint_head.final_layer.weight")} has '
                       f'{keypoints} outputs, not the keypoint count of a released Sapiens model '
                       f'({known}); name the task and its schema with --tasks NAME=0:SCHEMA')
  return _SAPIENS_TASKS[keypoints]


def _with_schema(task: TaskChoice, fmt: str, src: _Source, heads: dict[int, _Head]) -> TaskChoice:
  """``task`` with the source's own schema when none was given: the official dataset's of its
  index, or for Sapiens the one its head's keypoint count tells."""
  if task.schema:
    return task
  if fmt == 'sapiens':
    # A task of an index without a head is reported with the others' in to_model.
    return (dataclasses.replace(task, schema=_sapiens_task(src, heads)[1])
            if task.index in heads else task)
  if task.index >= len(OFFICIAL_DATASETS):
    raise ConvertError(f"--tasks: '{task.name}={task.index}': dataset index {task.index} has no "
                       'official schema; give one as NAME=INDEX:SCHEMA')
  return dataclasses.replace(task, schema=OFFICIAL_DATASETS[task.index][1])


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
    sigma: float | None = None,
    seed: int = 0,
) -> Imported:
  """Builds our model from an official-layout dict (``fmt`` names the source: one of FORMATS).

  ``fmt`` 'mae' means a backbone alone: heads start fresh (seeded), and ``expert_dim`` > 0
  factorizes it (every expert ← the last P outputs of fc2, as the official loader does).
  ``fmt`` 'sapiens' (from :func:`sapiens_to_official`): one head, index 0, whose keypoint count
  picks its task (17 coco, 133 wholebody, 308 goliath) unless ``tasks`` name one; a position
  embedding without cls slot whose grid is that of ``src_image_size`` (default 1024×768); the
  codec σ from :func:`sapiens_sigma`. A task without a schema takes the source's own. ``sigma``
  sets the codec σ (heatmap pixels) of any format (default: 2, Sapiens' rule for 'sapiens').
  ``image_size`` (H, W) other than the source's resamples the position embedding bicubically.
  ConvertError (one line, naming ``origin`` and the tensor or field) for anything the model
  cannot hold."""
  sapiens = fmt == 'sapiens'
  src = _Source(sd, origin, sapiens_name if sapiens else (lambda name: name))
  notes = [SAPIENS_LICENCE] if sapiens else []
  proj = src.get('backbone.patch_embed.proj.weight')
  width, patch = proj.shape[0], proj.shape[2]
  if patch < 16 and fmt == 'mae':
    # ViTPose-H starts from MAE's ViT-H/14: the official loader zero-pads the kernel to 16×16.
    pad = (16 - patch) // 2, 16 - patch - (16 - patch) // 2
    proj = np.pad(proj, ((0, 0), (0, 0), pad, pad))
    notes.append(f'patch kernel {patch}×{patch} zero-padded to 16×16 (official loader)')
    patch = 16
  # Every block up to the highest index present: a block with a tensor missing is an error below
  # rather than a shallower model.
  blocks = _indices(sd, r'backbone\.blocks\.(\d+)\..+')
  if not blocks:
    raise ConvertError(f'{origin}: no transformer blocks ({src.label("backbone.blocks.0.")}*) '
                       'found')
  depth = blocks[-1] + 1
  published = (_DEPTH_SAPIENS if sapiens else _DEPTH_VIT).get(width)
  if published and depth != published:
    # A file missing its last blocks would otherwise import as a shallower network.
    notes.append(f'depth {depth}, where the published {"Sapiens" if sapiens else "ViT"} models '
                 f'of width {width} have {published}: check that the file is complete')
  hidden = src.peek('backbone.blocks.0.mlp.fc1.weight').shape[0]
  num_experts = len(_indices(sd, r'backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight'))
  part = src.sd['backbone.blocks.0.mlp.experts.0.weight'].shape[0] if num_experts else 0
  if num_heads is None:
    table = {'mae': _HEADS_MAE, 'sapiens': _HEADS_SAPIENS}.get(fmt, _HEADS_VITPOSE)
    if width not in table:
      raise ConvertError(f'{origin}: width {width} is not a published '
                         f'{"Sapiens" if sapiens else "ViT"} size ({", ".join(map(str, table))}); '
                         'pass --num-heads')
    num_heads = table[width]
    notes.append(f'{num_heads} attention heads (the published models of width {width})')
  elif sapiens:
    notes.append(f'{num_heads} attention heads (given)')

  if sapiens:
    src_size = tuple(src_image_size or SAPIENS_IMAGE_SIZE)
    pos, grid, pos_notes = _sapiens_pos_embed(src, src_size, patch)
    notes += pos_notes
    if src_image_size is None:
      notes.append(f'source input {src_size[0]}×{src_size[1]} (Sapiens\' pose models; '
                   '--src-image-size for another)')
    image_size = image_size or src_size
  else:
    pos = src.get('backbone.pos_embed')
    grid = _source_grid(pos.shape[1] - 1, (src_image_size, image_size), patch, origin)
    if image_size is None:
      image_size = (256, 192) if fmt == 'mae' else (grid[0] * patch, grid[1] * patch)

  shared_head = fmt == 'hf'
  prefixes = {} if fmt == 'mae' else _head_prefixes(src)
  heads = {i: _read_head(src, p, fmt) for i, p in prefixes.items()}
  if fmt != 'mae' and not heads:
    raise ConvertError(f'{origin}: no keypoint head '
                       f'({src.label("keypoint_head.final_layer.weight")}) found')
  if tasks is None:
    if fmt == 'mae':
      tasks = [TaskChoice('coco', 0, 'coco17')]
    elif sapiens:
      name, schema = _sapiens_task(src, heads)
      tasks = [TaskChoice(name, 0, schema)]
    else:
      tasks = _default_tasks(heads, shared_head, origin)
  tasks = [_with_schema(t, fmt, src, heads) for t in tasks]
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
          f'keypoints but the head of dataset index {t.index} ({src.label(head[1])}) has '
          f'{head[0].keypoints}')
    kind = head[0].kind if head else 'classic'
    specs.append(models.TaskSpec(t.name, schema, experts[t.name], kind))
  decoders = {(h.channels, len(h.deconvs)) for h, _ in task_heads.values() if h.kind != 'simple'}
  if len(decoders) > 1:
    raise ConvertError(f'{origin}: the heads differ in decoder (width, depth) {sorted(decoders)}; '
                       'one model holds one decoder geometry')
  channels, layers = (decoders.pop() if decoders
                      else (models.VARIANTS['B'].deconv_channels, 2))
  variant = 'custom' if sapiens else next(
      (name for name in ('S', 'B', 'L', 'H')
       if (models.VARIANTS[name].width, models.VARIANTS[name].depth) == (width, depth)), 'custom')
  config = models.ModelConfig(
      tasks=tuple(specs), variant=variant, width=width, depth=depth, num_heads=num_heads,
      mlp_ratio=hidden / width, patch_size=patch, image_size=tuple(image_size),
      expert_dim=part if factorized else 0, num_experts=num_experts if factorized else 0,
      deconv_channels=channels, num_deconv_layers=layers, eps=eps,
      drop_path=models.VARIANTS[variant].drop_path if variant != 'custom' else 0.0,
      pos_embed_cls_slot=not sapiens)
  if sigma is not None:
    config = config.replace(heatmap_sigma=sigma)
    notes.append(f'codec σ {sigma:g} (given)')
  elif sapiens:
    config = config.replace(heatmap_sigma=sapiens_sigma(config.heatmap_size))
    h, w = config.heatmap_size
    notes.append(f'codec σ {config.heatmap_sigma:g} at {h}×{w} heatmaps (Sapiens\' σ 6 at '
                 '256×192, scaled with the heatmap height, at least 2; --sigma for another)')
  dst_grid = config.grid_size
  if dst_grid != grid:
    notes.append(f'position embedding resampled {grid[0]}×{grid[1]} → {dst_grid[0]}×{dst_grid[1]} '
                 '(bicubic, torch semantics)')
  model = models.create_model(config, seed=seed)
  params = nnx.to_pure_dict(nnx.state(model))
  _fill_backbone(src, params['backbone'], config, proj,
                 resample_pos_embed(pos, grid, dst_grid, cls_slot=not sapiens),
                 fmt == 'mae' and factorized, source_experts)
  for name, (head, prefix) in task_heads.items():
    _fill_head(src, params['heads'][name], head, prefix)
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  if src.zero_biases and sapiens:
    # Every linear layer of Sapiens' ViT has a bias (qkv_bias=True): the file is damaged.
    raise ConvertError(f'{origin}: tensor {src.zero_biases[0]!r} is missing'
                       + (f' (and {len(src.zero_biases) - 1} other biases)'
                          if len(src.zero_biases) > 1 else ''))
  if src.zero_biases:
    notes.append(f'{len(src.zero_biases)} biases absent in the file, taken as zero: '
                 f'{", ".join(src.zero_biases[:8])}' + (', ...' if len(src.zero_biases) > 8 else ''))
  unused = src.unused()
  if unused:
    notes.append(f'{len(unused)} tensors not used: {", ".join(unused[:8])}'
                 + (', ...' if len(unused) > 8 else ''))
  return Imported(config, model, notes)


def _put(dst: dict, key, value: np.ndarray, name: str, src: _Source):
  want = tuple(np.shape(dst[key]))
  if value.shape != want:
    raise ConvertError(f'{src.origin}: {src.label(name)} gives shape {value.shape}, the model '
                       f'needs {want}')
  dst[key] = value.astype(np.float32)


def _linear(src: _Source, dst: dict, name: str, rows: slice | None = None):
  weight = src.get(name + '.weight')
  if name + '.bias' in src:
    bias = src.get(name + '.bias')
  else:
    bias = np.zeros(weight.shape[0])
    src.zero_biases.append(src.label(name + '.bias'))
  if rows is not None:
    weight, bias = weight[rows], bias[rows]
  _put(dst, 'kernel', weight.T, name + '.weight', src)  # torch (out, in) → (in, out)
  _put(dst, 'bias', bias, name + '.bias', src)


def _norm(src: _Source, dst: dict, name: str):
  _put(dst, 'scale', src.get(name + '.weight'), name + '.weight', src)
  _put(dst, 'bias', src.get(name + '.bias'), name + '.bias', src)


def _conv(src: _Source, dst: dict, name: str):
  # torch Conv2d (out, in, kh, kw) → our (kh, kw, in, out).
  _put(dst, 'kernel', src.get(name + '.weight').transpose(2, 3, 1, 0), name + '.weight', src)
  _put(dst, 'bias', src.get(name + '.bias'), name + '.bias', src)


def _fill_backbone(src, dst, config, proj, pos, split_fc2, source_experts):
  _put(dst['patch_embed']['proj'], 'kernel', proj.transpose(2, 3, 1, 0),
       'backbone.patch_embed.proj.weight', src)
  _put(dst['patch_embed']['proj'], 'bias', src.get('backbone.patch_embed.proj.bias'),
       'backbone.patch_embed.proj.bias', src)
  _put(dst, 'pos_embed', pos, 'backbone.pos_embed', src)
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
  for layer, k in enumerate(head.deconvs):
    name = f'{prefix}deconv_layers.{k}'
    # torch ConvTranspose2d (in, out, kh, kw) → our (kh, kw, out, in), no flip.
    _put(dst['deconv_layers'][layer], 'kernel', src.get(name + '.weight').transpose(2, 3, 1, 0),
         name + '.weight', src)
    if head.kind == 'sapiens':
      continue  # InstanceNorm without affine: nothing to load
    bn = f'{prefix}deconv_layers.{k + 1}'
    norm = dst['deconv_norms'][layer]
    for ours, theirs in (('scale', 'weight'), ('bias', 'bias'), ('mean', 'running_mean'),
                         ('var', 'running_var')):
      _put(norm, ours, src.get(f'{bn}.{theirs}'), f'{bn}.{theirs}', src)
  for layer, k in enumerate(head.convs):
    _conv(src, dst['conv_layers'][layer], f'{prefix}conv_layers.{k}')
  _conv(src, dst['final_layer'], prefix + 'final_layer')
