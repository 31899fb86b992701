"""Weights in and out: import official / Hugging Face / MAE / Sapiens checkpoints, split a task,
export.

    python -m vitpose_jax.convert --src vitpose+_base.pth --format mmpose --dst runs/vitpose_pp_b
    python -m vitpose_jax.convert --src hf_model_dir/ --format hf --dst runs/hf_b
    python -m vitpose_jax.convert --src mae_pretrain_vit_base.pth --format mae --dst runs/mae_b \\
        --tasks coco=0,infant=1:infant_smil25 --expert-dim 192
    python -m vitpose_jax.convert --src sapiens_0.3b_coco_best_coco_AP_796.pth --format sapiens \\
        --dst runs/sapiens_03b [--image-size 512,384]
    python -m vitpose_jax.convert --split-task wholebody --src runs/vitpose_pp_b --dst runs/wb
    python -m vitpose_jax.convert --export coco --src runs/hf_b --dst coco.stablehlo --batch 1

Import writes a run directory (model.json + one checkpoint + convert.json, the provenance) that
``predict``, ``evaluate`` and ``--config.init_from`` accept. Width, depth, P, decoder and
keypoint counts are read from tensor shapes. ViTPose++ checkpoints map their dataset indices
(0 COCO-17, 1 AIC-14, 2 MPII-16, 3 AP-10K, 4 APT-36K, 5 COCO-WholeBody-133) onto tasks of the
matching built-in schemas; ``--tasks NAME=INDEX[:SCHEMA],...`` chooses names, indices and schemas
(a Hugging Face checkpoint has one head, shared by every task listed). A position embedding of
another grid is resampled bicubically with torch's semantics. ``--split-task`` writes the dense
single-task model of one task (fc2 outputs ⊕ that task's expert): what the official
tools/model_split.py set out to do. ``--export`` writes one task's network as serialised StableHLO
(jax.export) with a JSON sidecar describing its input and output.

Sapiens (Meta's facebookresearch/sapiens pose models: an mmengine .pth, or the TorchScript and
torch.export .pt2 files of Sapiens-Lite, the latter with --trust-pickle since torch.export.load
unpickles) becomes a model without a cls slot in its position
embedding and with 'sapiens' heads. Width, depth, decoder and keypoint count come from shapes;
the keypoint count names the task (17 coco, 133 wholebody, 308 goliath; otherwise --tasks
NAME=0:SCHEMA); attention heads from the published sizes (width 1024/1280/1536/1920 → 16/16/24/32
heads; --num-heads otherwise); the source grid from its 1024×768 input (--src-image-size when it
was trained at another). The heatmap σ is Sapiens' 6 at 256×192 heatmaps, scaled with the heatmap
height and at least 2 at other input sizes (--sigma overrides). Sapiens' code and weights are
licensed CC BY-NC 4.0, non-commercial use only, and so is a model converted from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vitpose_jax import checkpoint, models, skeletons
from vitpose_jax.interop import official
from vitpose_jax.interop.files import ConvertError, read_hf_config, read_state_dict


def _size(text: str) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected H,W (e.g. 256,192), got {text!r}') from None
  return h, w


def _positive(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
  return value


def _check_dst(dst: str):
  if os.path.exists(dst) and not os.path.isdir(dst):
    raise ConvertError(f'{dst}: is a file; --dst names the run directory to write')
  if os.path.exists(os.path.join(dst, 'model.json')) or os.path.isdir(
      checkpoint.checkpoint_dir(dst)):
    raise ConvertError(f'{dst}: already holds a run (model.json or checkpoints/); choose another '
                       '--dst so nothing is overwritten')


def _hf_options(src: str) -> dict:
  if not os.path.isdir(src):
    raise ConvertError(f'{src}: --format hf needs the model directory (config.json + weights)')
  config = read_hf_config(src)
  backbone = config.get('backbone_config') or {}
  options = {'num_heads': backbone.get('num_attention_heads'),
             'eps': backbone.get('layer_norm_eps', 1e-12)}
  if backbone.get('image_size'):
    size = backbone['image_size']
    options['src_image_size'] = tuple(size) if isinstance(size, list) else (size, size)
  if backbone.get('hidden_act', 'gelu') != 'gelu':
    raise ConvertError(f'{src}/config.json: backbone_config.hidden_act '
                       f'{backbone["hidden_act"]!r}; the model uses exact GELU ("gelu")')
  if config.get('use_simple_decoder', True) and config.get('scale_factor', 4) != 4:
    raise ConvertError(f'{src}/config.json: scale_factor {config["scale_factor"]}; the simple '
                       'decoder upsamples ×4')
  return options


def import_weights(args) -> official.Imported:
  sd = read_state_dict(args.src, trust_pickle=args.trust_pickle)
  found = official.detect_format(sd)
  if found != args.format:
    raise ConvertError(f'{args.src}: --format {args.format}, but its tensor names look like '
                       f'{found or "none of " + "/".join(official.FORMATS)}')
  options = {'eps': 1e-6}
  if args.format == 'hf':
    options.update(_hf_options(args.src))
    sd = official.hf_to_official(sd)
  elif args.format == 'sapiens':
    sd = official.sapiens_to_official(sd)
  notes = []
  if args.format == 'mae':
    sd, dropped = official.mae_to_official(sd)
    if dropped:
      notes.append(f'left out (not part of a pose backbone): {", ".join(dropped)}')
  elif args.expert_dim:
    raise ConvertError('--expert-dim applies to --format mae (an MAE backbone has no experts); '
                       'official and Hugging Face checkpoints keep their own')
  for key in ('num_heads', 'eps', 'src_image_size', 'sigma'):
    if getattr(args, key) is not None:
      options[key] = getattr(args, key)
  imported = official.to_model(
      sd, origin=args.src, fmt=args.format,
      tasks=official.parse_tasks(args.tasks) if args.tasks else None,
      image_size=args.image_size, drop_headless_experts=args.drop_headless_experts,
      expert_dim=args.expert_dim, seed=args.seed, **options)
  imported.notes[:0] = notes
  return imported


def _describe(config: models.ModelConfig) -> str:
  experts = (f'P {config.expert_dim}, {config.num_experts} experts' if config.factorized
             else 'dense')
  return (f'variant {config.variant}, width {config.width}, depth {config.depth}, '
          f'{config.num_heads} heads, {experts}, input {config.image_size[0]}×'
          f'{config.image_size[1]}, LayerNorm eps {config.eps:g}\n  tasks: '
          + '; '.join(f'{t.name} ({t.schema.name}, {t.num_keypoints} keypoints, '
                      f'expert {t.expert}, {t.head} head)' for t in config.tasks))


def _run_import(args) -> int:
  _check_dst(args.dst)
  imported = import_weights(args)
  checkpoint.save_model(args.dst, imported.model, step=0)
  with open(os.path.join(args.dst, 'convert.json'), 'w') as f:
    json.dump({'src': os.path.abspath(args.src), 'format': args.format, 'notes': imported.notes},
              f, indent=1)
  print(f'converted {args.src} ({args.format}) -> {args.dst}: {_describe(imported.config)}')
  for note in imported.notes:
    print(f'  note: {note}')
  return 0


def _run_split(args) -> int:
  _check_dst(args.dst)
  model, step = checkpoint.load_model(args.src, step=args.step)
  dense = models.dense_for_task(model, args.split_task)
  checkpoint.save_model(args.dst, dense, step=0)
  print(f'split task {args.split_task!r} of {args.src} (step {step}) -> {args.dst}: '
        f'{_describe(dense.config)}')
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m vitpose_jax.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=f'Licence: {official.SAPIENS_LICENCE} (--format sapiens).')
  parser.add_argument('--src', required=True,
                      help='weight file or Hugging Face model directory (import), or a run '
                           'directory (--split-task, --export)')
  parser.add_argument('--dst', required=True, help='run directory to write (or artifact file)')
  parser.add_argument('--format', choices=official.FORMATS, help='source layout (import)')
  parser.add_argument('--tasks', help='NAME=INDEX[:SCHEMA],...: tasks and the dataset index '
                                      '(expert and head) each takes (default: every head, '
                                      'official names; sapiens: its one head, index 0, named by '
                                      'its keypoint count)')
  parser.add_argument('--drop-headless-experts', action='store_true',
                      help='leave out experts no task uses (default: keep them)')
  parser.add_argument('--num-heads', type=_positive, help='attention heads (default: from the '
                                                    'source config or the published models)')
  parser.add_argument('--eps', type=float, help='LayerNorm eps (default: 1e-6; hf: its config)')
  parser.add_argument('--src-image-size', type=_size,
                      help='H,W the source was trained at, when its patch count is ambiguous '
                           '(sapiens: always, default 1024,768)')
  parser.add_argument('--image-size', type=_size, help='H,W of the converted model (default: '
                      "the source's; mae: 256,192); position embeddings are resampled")
  parser.add_argument('--sigma', type=float, help='heatmap σ of the converted model\'s codec, in '
                      'heatmap pixels (default: 2; sapiens: 6 at 256×192 heatmaps, scaled with '
                      'the heatmap height, at least 2)')
  parser.add_argument('--expert-dim', type=int, default=0,
                      help='mae: P > 0 makes a factorized backbone, every expert from fc2')
  parser.add_argument('--seed', type=int, default=0, help='seed of freshly initialised heads')
  parser.add_argument('--trust-pickle', action='store_true',
                      help='load .pth files that hold Python objects besides tensors, and '
                           'torch.export .pt2 archives (torch.export.load unpickles them)')
  parser.add_argument('--split-task', metavar='TASK',
                      help='write the dense single-task model of TASK of the run --src')
  parser.add_argument('--export', metavar='TASK', help='export TASK of the run --src to --dst')
  parser.add_argument('--batch', type=int, default=1, help='export: fixed batch size')
  parser.add_argument('--flip-test', action='store_true',
                      help='export: average with the mirrored input (as evaluation does)')
  parser.add_argument('--platforms', help='export: comma list, e.g. cpu,cuda (default: this '
                                          "machine's)")
  parser.add_argument('--step', type=checkpoint.parse_step,
                      help='--split-task/--export: checkpoint step or "best" (default: latest)')
  args = parser.parse_args(argv)
  modes = [m for m in ('format', 'split_task', 'export') if getattr(args, m)]
  if len(modes) != 1:
    parser.error('give exactly one of --format (import), --split-task or --export')
  try:
    if args.export:
      from vitpose_jax import export
      return export.main_export(args)
    return _run_split(args) if args.split_task else _run_import(args)
  except (ConvertError, ValueError, checkpoint.CheckpointError, models.ModelConfigError,
          skeletons.SchemaError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
