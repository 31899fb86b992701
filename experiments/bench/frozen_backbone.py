"""Heads-only fine-tuning of an imported Sapiens-0.3B-shaped model, with and without the frozen
backbone's features cached (configs/finetune.py:train=heads,augment=none).

    python experiments/bench/frozen_backbone.py                     # 0.3B at 256x192 (~15 min, 2 cores)
    python experiments/bench/frozen_backbone.py --small             # tiny shapes (the test)

In one process:
  1. a Sapiens checkpoint of the 0.3B geometry (width 1024, depth 24, 16 heads, head of 768
     channels, K = 17, position embedding of the 64×48 grid) with random weights, written in
     Sapiens' tensor names as safetensors, is imported with ``convert --format sapiens
     --image-size 256,192``;
  2. the same heads-only fine-tuning on synthetic infants runs twice from it, with
     ``config.feature_cache`` 'on' and 'off': same data, seed and steps;
  3. per step wall time (the median of the steps after the first, which compiles), the cache's
     one-time cost, and whether the backbone's weights after each run equal the imported ones
     bit for bit, are printed and written to ``--out``/results[_small].json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time

import jax
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vitpose_jax import checkpoint, configlib, convert, train  # noqa: E402

GEOMETRY = {  # Sapiens-0.3B (pose/configs/sapiens_pose: embed_dims 1024, 24 layers, 768-wide head)
    'full': dict(width=1024, depth=24, channels=768, src=(1024, 768), image=(256, 192)),
    'small': dict(width=64, depth=2, channels=32, src=(256, 192), image=(128, 96), heads=4),
}


def write_sapiens_checkpoint(path: str, width: int, depth: int, channels: int,
                             src: tuple[int, int], keypoints: int = 17, seed: int = 0):
  """Random weights in Sapiens' state-dict names and shapes (mmengine layout), as safetensors."""
  import safetensors.numpy

  rng = np.random.default_rng(seed)

  def normal(*shape, scale=0.02):
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

  grid = (src[0] // 16) * (src[1] // 16)
  sd = {'backbone.patch_embed.projection.weight': normal(width, 3, 16, 16),
        'backbone.patch_embed.projection.bias': normal(width),
        'backbone.pos_embed': normal(1, grid, width),
        'backbone.ln1.weight': 1 + normal(width), 'backbone.ln1.bias': normal(width)}
  for i in range(depth):
    p = f'backbone.layers.{i}.'
    sd.update({p + 'ln1.weight': 1 + normal(width), p + 'ln1.bias': normal(width),
               p + 'ln2.weight': 1 + normal(width), p + 'ln2.bias': normal(width),
               p + 'attn.qkv.weight': normal(3 * width, width), p + 'attn.qkv.bias': normal(3 * width),
               p + 'attn.proj.weight': normal(width, width), p + 'attn.proj.bias': normal(width),
               p + 'ffn.layers.0.0.weight': normal(4 * width, width),
               p + 'ffn.layers.0.0.bias': normal(4 * width),
               p + 'ffn.layers.1.weight': normal(width, 4 * width),
               p + 'ffn.layers.1.bias': normal(width)})
  sd['head.deconv_layers.0.weight'] = normal(width, channels, 4, 4)
  sd['head.deconv_layers.3.weight'] = normal(channels, channels, 4, 4)
  for k in (0, 3):
    sd[f'head.conv_layers.{k}.weight'] = normal(channels, channels, 1, 1)
    sd[f'head.conv_layers.{k}.bias'] = normal(channels)
  sd['head.final_layer.weight'] = normal(keypoints, channels, 1, 1)
  sd['head.final_layer.bias'] = normal(keypoints)
  safetensors.numpy.save_file(sd, path)


def fine_tune(run: str, workdir: str, cache: str, args) -> dict:
  config = configlib.sibling_config(os.path.join(ROOT, 'configs', 'finetune.py'),
                                    'finetune').get_config(
      f'tasks=infant,train=heads,augment=none,steps={args.steps},batch={args.batch}')
  config.init_from = run
  config.feature_cache = cache
  config.tasks.infant.train.num = args.instances
  config.tasks.infant.val.num = args.batch
  config.evals.infant.batch_size = args.batch
  config.schedule.warmup_steps = 1
  config.log_every_steps = 1
  config.plots = 0
  start = time.perf_counter()
  printed = _Tee(sys.stdout)
  with contextlib.redirect_stdout(printed):
    train.train_and_evaluate(config, workdir)
  total = time.perf_counter() - start
  built = re.search(r'feature cache infant: .* built in ([0-9.]+) s', printed.text)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  # img/s of each logged step is over that step alone (log_every_steps 1); the first compiles.
  seconds = [args.batch / r['train/img_per_s'] for r in rows[1:]]
  return {'step_s_median': float(np.median(seconds)), 'step_s': seconds, 'run_s': total,
          'cache_build_s': float(built.group(1)) if built else None,
          'losses': [r['train/loss'] for r in rows]}


class _Tee:
  """Writes through to ``stream`` and keeps the text: the trainer prints the cache's build time."""

  def __init__(self, stream):
    self.stream, self.parts = stream, []

  def write(self, text):
    self.parts.append(text)
    return self.stream.write(text)

  def flush(self):
    self.stream.flush()

  @property
  def text(self) -> str:
    return ''.join(self.parts)


def backbone_unchanged(run: str, workdir: str) -> bool:
  before, _ = checkpoint.load_model(run)
  after, _ = checkpoint.load_model(workdir)
  a, b = (jax.tree.leaves(nnx.to_pure_dict(nnx.state(m.backbone))) for m in (before, after))
  return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                  for x, y in zip(a, b))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--small', action='store_true', help='tiny shapes: the test')
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--instances', type=int, default=32, help='synthetic infants to train on')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                                    'bench_frozen_backbone'))
  args = parser.parse_args(argv)
  geometry = GEOMETRY['small' if args.small else 'full']
  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, 'sapiens.safetensors')
    t0 = time.perf_counter()
    write_sapiens_checkpoint(src, geometry['width'], geometry['depth'], geometry['channels'],
                             geometry['src'])
    run = os.path.join(tmp, 'imported')
    size = ','.join(map(str, geometry['image']))
    source = ','.join(map(str, geometry['src']))
    heads = ['--num-heads', str(geometry['heads'])] if 'heads' in geometry else []
    rc = convert.main(['--src', src, '--format', 'sapiens', '--dst', run,
                       '--src-image-size', source, '--image-size', size, *heads])
    if rc:
      return rc
    import_s = time.perf_counter() - t0
    results = {}
    for cache in ('on', 'off'):
      workdir = os.path.join(tmp, f'cache_{cache}')
      results[cache] = fine_tune(run, workdir, cache, args)
      results[cache]['backbone_bitwise_unchanged'] = backbone_unchanged(run, workdir)
  on, off = results['on'], results['off']
  summary = {
      'geometry': geometry, 'steps': args.steps, 'batch': args.batch,
      'instances': args.instances, 'import_s': import_s,
      'device': f'{jax.devices()[0].device_kind} ×{jax.device_count()} ({platform.machine()}, '
                f'{os.cpu_count()} CPUs)',
      'cached': on, 'uncached': off,
      'step_speedup': off['step_s_median'] / on['step_s_median'],
  }
  if on['cache_build_s'] is None or off['cache_build_s'] is not None:
    print('error: the cached run did not build a cache, or the uncached one did', file=sys.stderr)
    return 1
  # The cache pays for itself after this many steps: its one-time build over each step's saving.
  summary['break_even_steps'] = on['cache_build_s'] / max(
      1e-9, off['step_s_median'] - on['step_s_median'])
  print(f'Sapiens-{"small" if args.small else "0.3B"} geometry at '
        f'{geometry["image"][0]}x{geometry["image"][1]}, heads only, batch {args.batch}, '
        f'{args.instances} instances, {args.steps} steps on {summary["device"]}')
  print(f'  per step: uncached {off["step_s_median"]:.3f} s, cached {on["step_s_median"]:.3f} s '
        f'(x{summary["step_speedup"]:.2f})')
  print(f'  the cache ({args.instances} instances) took {on["cache_build_s"]:.1f} s once: it '
        f'pays for itself after {summary["break_even_steps"]:.1f} steps')
  print(f'  backbone bit for bit unchanged: cached {on["backbone_bitwise_unchanged"]}, '
        f'uncached {off["backbone_bitwise_unchanged"]}')
  os.makedirs(args.out, exist_ok=True)
  name = 'results_small.json' if args.small else 'results.json'
  with open(os.path.join(args.out, name), 'w') as f:
    json.dump(summary, f, indent=1)
  same = np.allclose(on['losses'], off['losses'], rtol=1e-4, atol=0)
  print(f'  the same loss at every step: {same}')
  ok = on['backbone_bitwise_unchanged'] and off['backbone_bitwise_unchanged'] and same
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
