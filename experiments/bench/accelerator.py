"""ViTPose-B throughput on an accelerator (issue 8): bf16 inference and training at batch 64.

    python experiments/bench/accelerator.py                # on a GPU/TPU host (a few minutes)
    python experiments/bench/accelerator.py --small        # tiny shapes on any backend (the test)

In one process, on the default JAX backend:
  (a) inference of ViTPose-B (classic decoder, one task), batch 64, 256x192, in bf16 and f32:
      the Predictor users run (host crops in, heatmaps back on the host) and the jitted network
      on a device-resident batch;
  (b) training steps, batch 64, bf16 compute: the product's train step (vitpose_jax.train) for
      ViTPose-B on one task and for 4-task ViTPose++-B (16 samples per task), factorized and with
      a plain MLP;
  (c) when torch sees a CUDA device and transformers is installed: Hugging Face's VitPose-B on
      torch at the same batch, bf16 weights for inference and bf16 autocast for training
      (forward + MSE + backward + AdamW), for reference;
  (d) on NVIDIA GPUs of compute capability >= 8.0: (a)'s network and (b)'s single-task step in
      bf16 with XLA's attention against cuDNN's fused attention, and their heatmaps' difference.
(a) to (c) use the model's default attention setting ('auto').

Images per second from the best of ``--iters`` rounds (and the median), printed and written to
``--out``/results[_small].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_pytorch  # noqa: E402  (a sibling script: its trainer, batches and timing helpers)

from vitpose_jax import backend, models, train  # noqa: E402
from vitpose_jax.predict import Predictor  # noqa: E402

ROOT = vs_pytorch.ROOT


def uint8_crops(image_size, batch: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch, *image_size, 3), dtype=np.uint8)


def single_task_model(args, dtype: str, attention: str = 'auto') -> models.VitPose:
  config = vs_pytorch.load_config('single_task', f'task=coco,variant={args.variant},'
                                  f'batch={args.batch}')
  config.model.image_size = args.image_size
  config.model.dtype = dtype
  config.model.attention = attention
  mcfg = train.model_config_from_training(config)
  return models.create_model(mcfg, kernels=backend.resolve_kernels(mcfg, jax.devices()[0]))


def time_inference(args, dtype: str, crops: np.ndarray, attention: str = 'auto') -> dict:
  model = single_task_model(args, dtype, attention)
  predictor = Predictor(model, flip_test=False)
  graphdef, state = nnx.split(model)
  network = jax.jit(lambda s, x: nnx.merge(graphdef, s)({'coco': x})[0]['coco'])
  on_device = jax.device_put(crops)
  times = vs_pytorch.alternate(
      {'predictor': lambda: predictor.heatmaps('coco', crops),
       'network': lambda: network(state, on_device).block_until_ready()},
      args.iters, args.warmup)
  return {k: vs_pytorch.summary(v, args.batch) for k, v in times.items()}


def bench_inference(args, results):
  out = {}
  crops = uint8_crops(args.image_size, args.batch)
  for dtype in ('bfloat16', 'float32'):
    out[dtype] = time_inference(args, dtype, crops)
    print(f'(a) inference, ViTPose-{args.variant}, batch {args.batch}, {dtype}')
    print(vs_pytorch.line('Predictor (host in/out)', out[dtype]['predictor']))
    print(vs_pytorch.line('network, batch on device', out[dtype]['network']))
  results['inference'] = out


def time_training(args, name: str, arg: str, expert_dim: int | None, attention: str = 'auto',
                  trace: str | None = None) -> dict:
  config = vs_pytorch.load_config(name, arg)
  config.model.image_size = args.image_size
  config.model.dtype = 'bfloat16'
  config.model.attention = attention
  if expert_dim is not None:
    config.model.expert_dim = expert_dim
  trainer = vs_pytorch.OurTrainer(config)
  counts = {t: c.batch_size for t, c in config.tasks.items()}
  batch = trainer.device_batch(vs_pytorch.random_batch(trainer.mcfg, counts))
  times = vs_pytorch.alternate({'step': lambda: trainer.step(batch)}, args.iters, args.warmup)
  if trace:
    write_trace(trace, lambda: trainer.step(batch))
  return vs_pytorch.summary(times['step'], sum(counts.values()))


def write_trace(path: str, fn):
  """A profiler trace of two calls of ``fn`` as one Perfetto JSON file, and the 25 ops that
  took longest in it (summed over calls) printed."""
  import collections
  import glob
  import gzip
  import shutil
  import tempfile

  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      fn()
      fn()
    found = glob.glob(os.path.join(tmp, '**', '*.trace.json.gz'), recursive=True)
    shutil.copy(found[0], path)
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  # Device kernels, where the trace has a device timeline; host ops otherwise (CPU).
  device_pids = {e['pid'] for e in events if e.get('ph') == 'M' and e.get('name') ==
                 'process_name' and '/device:' in str(e.get('args', {}).get('name', ''))}
  totals, counts = collections.Counter(), collections.Counter()
  for e in events:
    if (e.get('ph') == 'X' and 'dur' in e and not e['name'].startswith('$')
        and (not device_pids or e.get('pid') in device_pids)):
      totals[e['name']] += e['dur']
      counts[e['name']] += 1
  print(f'  trace of two steps: {path}; longest ops (us summed over both, calls):')
  for name, total in totals.most_common(25):
    print(f'    {total:10.0f} us  x{counts[name]:<4d} {name[:110]}')


def bench_training(args, results):
  out = {}
  per_task = args.batch // 4
  arms = {
      'ViTPose single task': ('single_task', f'task=coco,variant={args.variant},'
                              f'batch={args.batch}', None),
      'ViTPose++ 4 tasks, factorized': ('multitask', f'variant={args.variant},batch={per_task},'
                                        'scratch', -1),
      'ViTPose++ 4 tasks, plain MLP': ('multitask', f'variant={args.variant},batch={per_task},'
                                       'scratch', 0),
  }
  for label, arm in arms.items():
    trace = (os.path.join(args.out, 'trace_train_step.json.gz')
             if args.trace and label == 'ViTPose single task' else None)
    out[label] = time_training(args, *arm, trace=trace)
    print(vs_pytorch.line(label, out[label]))
  key = 'ViTPose++ 4 tasks, factorized', 'ViTPose++ 4 tasks, plain MLP'
  out['factorized_over_plain'] = out[key[0]]['best_s'] / out[key[1]]['best_s']
  print(f'  ratio factorized/plain step time: {out["factorized_over_plain"]:.3f} (best)')
  results['training'] = out


def bench_attention(args, results):
  """XLA's attention against cuDNN's fused kernel: same weights, bf16."""
  if not backend.cudnn_attention_applies(single_task_model(args, 'bfloat16', 'xla').config,
                                         jax.devices()[0]):
    print('(d) skipped: cuDNN attention needs an NVIDIA GPU of compute capability >= 8.0')
    return
  out = {}
  crops = uint8_crops(args.image_size, args.batch)
  heatmaps = {}
  for attention in ('xla', 'cudnn'):
    model = single_task_model(args, 'bfloat16', attention)
    heatmaps[attention] = np.asarray(model({'coco': jnp.asarray(crops)})[0]['coco'])
    out[attention] = {
        'inference': time_inference(args, 'bfloat16', crops, attention)['network'],
        'train_step': time_training(args, 'single_task', f'task=coco,variant={args.variant},'
                                    f'batch={args.batch}', None, attention)}
  scale = float(np.abs(heatmaps['xla']).max())
  out['max_abs_diff'] = float(np.abs(heatmaps['xla'] - heatmaps['cudnn']).max())
  print(f'(d) attention, ViTPose-{args.variant} bf16, batch {args.batch}: XLA vs cuDNN fused '
        f'(heatmaps max |diff| {out["max_abs_diff"]:.2e}, max |heatmap| {scale:.2e})')
  for attention in ('xla', 'cudnn'):
    print(vs_pytorch.line(f'inference, {attention}', out[attention]['inference']))
    print(vs_pytorch.line(f'training step, {attention}', out[attention]['train_step']))
  results['attention'] = out


def bench_torch(args, results):
  try:
    import torch
    import transformers  # noqa: F401
  except ImportError:
    print('(c) skipped: torch or transformers is not installed')
    return
  if not torch.cuda.is_available():
    print('(c) skipped: torch sees no CUDA device')
    return
  config = vs_pytorch.load_config('single_task', f'task=coco,variant={args.variant},'
                                  f'batch={args.batch}')
  config.model.image_size = args.image_size
  mcfg = train.model_config_from_training(config)
  k = mcfg.tasks[0].num_keypoints
  model = vs_pytorch.hf_model(mcfg, k).cuda()
  pixels = torch.randn(args.batch, 3, *args.image_size, device='cuda')
  target = torch.rand(args.batch, k, *mcfg.heatmap_size, device='cuda')
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
      heatmaps = model(pixel_values=pixels).heatmaps
    loss = torch.nn.functional.mse_loss(heatmaps.float(), target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()

  model.train()
  train_times = vs_pytorch.alternate({'step': step}, args.iters, args.warmup)
  inference_model = model.to(torch.bfloat16).eval()
  bf16_pixels = pixels.to(torch.bfloat16)

  def forward():
    with torch.inference_mode():
      inference_model(pixel_values=bf16_pixels).heatmaps.float().cpu()

  infer_times = vs_pytorch.alternate({'forward': forward}, args.iters, args.warmup)
  out = {'version': torch.__version__,
         'inference_bf16': vs_pytorch.summary(infer_times['forward'], args.batch),
         'train_step_bf16_autocast': vs_pytorch.summary(train_times['step'], args.batch)}
  print(f'(c) HF transformers VitPose-{args.variant} on torch {torch.__version__}, '
        f'batch {args.batch}')
  print(vs_pytorch.line('inference, bf16', out['inference_bf16']))
  print(vs_pytorch.line('training step, bf16 autocast', out['train_step_bf16_autocast']))
  results['torch'] = out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--small', action='store_true', help='tiny model and batch: a smoke run')
  parser.add_argument('--iters', type=int, default=20, help='timed rounds per measurement')
  parser.add_argument('--warmup', type=int, default=3, help='untimed calls after compiling')
  parser.add_argument('--only', nargs='+', choices=('a', 'b', 'c', 'd'),
                      default=('a', 'b', 'c', 'd'))
  parser.add_argument('--trace', action='store_true',
                      help='also write a profiler trace of the single-task training step')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                                    'bench_accelerator'))
  args = parser.parse_args()
  if args.small:
    args.variant, args.batch, args.image_size = 'micro', 8, (64, 48)
  else:
    args.variant, args.batch, args.image_size = 'B', 64, (256, 192)
  device = jax.devices()[0]
  os.makedirs(args.out, exist_ok=True)
  results = {'argv': sys.argv[1:], 'small': args.small, 'jax': jax.__version__,
             'backend': jax.default_backend(), 'device_kind': device.device_kind,
             'device_count': jax.device_count()}
  print(f'accelerator: jax {jax.__version__}, {jax.default_backend()} ({device.device_kind}) '
        f'x{jax.device_count()}; {args.iters} rounds after {args.warmup} warm-up; '
        f'{args.image_size[0]}x{args.image_size[1]}')
  if 'a' in args.only:
    bench_inference(args, results)
  if 'b' in args.only:
    print(f'(b) training step, batch {args.batch}, bf16 compute (f32 weights and optimizer)')
    bench_training(args, results)
  if 'c' in args.only:
    bench_torch(args, results)
  if 'd' in args.only:
    bench_attention(args, results)
  vs_pytorch.write_results(args, results)


if __name__ == '__main__':
  main()
