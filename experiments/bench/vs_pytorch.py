"""ViTPose-B on this CPU: our JAX code vs Hugging Face transformers' VitPose on torch (issue 8).

    python experiments/bench/vs_pytorch.py                 # full size (several minutes)
    python experiments/bench/vs_pytorch.py --small         # tiny shapes, under a minute (the test)

In one process, side by side:
  (a) inference, batch 8, 256x192, f32: our Predictor's jitted network vs HF in inference mode;
  (b) a full training step: ours is vitpose_jax.train.make_train_step (the step users run: UDP
      targets made on device, JointsMSE, AdamW with layer decay and clipping, donated state), HF's
      is forward + MSE + backward + gradient clipping + torch.optim.AdamW;
  (c) forward MFU: FLOPs of the compiled forward (XLA's cost analysis, and an analytic count of
      its matmuls and convolutions) over the best large f32 matmul rate measured here;
  (d) the 4-task factorized ViTPose++-B step against the same backbone with a plain MLP (same
      heads, same per-task batch shares);
  (e) the default demo config (configs/multitask.py): step time fed by the real input pipeline
      (grain iterator + host-to-device copy, as the training loop does) vs a batch held in memory;
      each in-memory block starts once the iterator's threads have refilled their prefetch buffer
      (the process idle), so that they do not slow the baseline.

Ours and theirs alternate round by round so that load from other processes hits both; each
figure is the median and the best of the rounds, and ratios use the best (the least disturbed).
Results are printed and written to ``--out``/results[_small].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import configlib, models, train
from vitpose_jax.predict import Predictor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, 'configs')

GOALS = {  # name: (value key, bound, 'min' = at least / 'max' = at most)
    'inference vs torch': ('inference_speedup', 1.5, 'min'),
    'training step vs torch': ('train_speedup', 1.5, 'min'),
    'forward MFU (analytic FLOPs)': ('mfu_analytic', 0.70, 'min'),
    'factorized / plain step': ('factorized_over_plain', 1.03, 'max'),
    'real pipeline / in-memory step': ('pipeline_over_memory', 1.05, 'max'),
}


def load_config(name: str, arg: str):
  return configlib.sibling_config(os.path.join(CONFIGS, 'x.py'), name).get_config(arg)


def cpu_info() -> dict:
  siblings = set()
  for cpu in range(os.cpu_count() or 1):
    path = f'/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list'
    if os.path.exists(path):
      with open(path) as f:
        siblings.add(f.read().strip())
  model = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model = names[0] if names else model
  # Cores are SMT siblings when one core's sibling list names more than one logical CPU.
  smt = any((',' in s) or ('-' in s) for s in siblings)
  return {'model': model, 'logical_cpus': os.cpu_count(), 'thread_siblings': sorted(siblings),
          'smt_siblings': smt}


def timed(fn, rounds: int) -> list[float]:
  out = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def alternate(fns: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
  """Seconds per call of each function, the functions alternating call by call."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      times[name] += timed(fn, 1)
  return times


def summary(times: list[float], batch: int) -> dict:
  best, median = min(times), statistics.median(times)
  return {'best_s': best, 'median_s': median, 'img_per_s_best': batch / best,
          'img_per_s_median': batch / median, 'times_s': times}


def line(label: str, s: dict) -> str:
  return (f'  {label:<34} best {s["best_s"] * 1e3:8.1f} ms  median {s["median_s"] * 1e3:8.1f} ms'
          f'  -> {s["img_per_s_best"]:6.2f} img/s (best), {s["img_per_s_median"]:6.2f} (median)')


def versus(title: str, ours_label: str, times: dict, batch: int) -> dict:
  """Prints ours against HF (throughput of the best and median rounds, and their ratios) and
  returns the summaries with ``speedup_best`` / ``speedup_median``."""
  out = {k: summary(v, batch) for k, v in times.items()}
  out['speedup_best'] = out['hf']['best_s'] / out['ours']['best_s']
  out['speedup_median'] = out['hf']['median_s'] / out['ours']['median_s']
  print(title)
  print(line(ours_label, out['ours']))
  print(line('HF transformers (torch)', out['hf']))
  print(f'  ratio ours/torch throughput: {out["speedup_best"]:.2f}x (best), '
        f'{out["speedup_median"]:.2f}x (median)')
  return out


# --- our side -------------------------------------------------------------------------------


def random_batch(mcfg: models.ModelConfig, counts: dict[str, int], seed: int = 0) -> dict:
  """Normalised-looking images and visible keypoints inside the crop, per task."""
  rng = np.random.default_rng(seed)
  h, w = mcfg.image_size
  batch = {}
  for name, n in counts.items():
    k = mcfg.task(name).num_keypoints
    xy = rng.uniform(0, 1, (n, k, 2)) * np.array([w - 1, h - 1])
    batch[name] = {'image': rng.standard_normal((n, h, w, 3)).astype(np.float32),
                   'keypoints': xy.astype(np.float32),
                   'keypoint_weights': np.ones((n, k), np.float32)}
  return batch


class OurTrainer:
  """The product's training step for ``config`` on a fixed or streamed batch."""

  def __init__(self, config, *, seed: int = 0):
    self.config = config
    self.mcfg = train.model_config_from_training(config)
    mesh = Mesh(np.array(jax.devices()), ('data',))
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P('data'))
    self.model = models.create_model(self.mcfg, seed=seed)
    graphdef, params, batch_stats = nnx.split(self.model, nnx.Param, nnx.BatchStat)
    # The schedule's length only sets lr values; any length past the warmup will do.
    tx, schedule = train.optimizer_and_schedule(config, self.mcfg, params, total_steps=10**6,
                                                steps_per_epoch=1000)
    self.state = jax.device_put(train.init_state(params, batch_stats, tx, seed), self.replicated)
    self.step_fn = train.make_train_step(config, self.mcfg, graphdef, tx, schedule,
                                         sharding=self.replicated)

  def device_batch(self, host_batch):
    return train.to_device(host_batch, self.sharded)

  def step(self, batch) -> float:
    # Reading the loss waits for the step to finish: each timing covers whole steps.
    self.state, metrics = self.step_fn(self.state, batch, None)
    return float(metrics['train/loss'])

  def forward_flops(self, images) -> float:
    graphdef, state = nnx.split(self.model)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[0])
    cost = fn.lower(state, images).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get('flops', float('nan')))


def analytic_forward_flops(mcfg: models.ModelConfig, batch: int) -> dict[str, float]:
  """2 × multiply-adds of every matmul and convolution of the forward pass (elementwise work,
  softmax and normalisation excluded)."""
  c, depth = mcfg.width, mcfg.depth
  hidden = int(c * mcfg.mlp_ratio)
  tokens = mcfg.num_patches
  patch = 2 * tokens * mcfg.patch_size**2 * 3 * c
  block = 2 * tokens * c * (3 * c + c + 2 * hidden) + 2 * 2 * tokens * tokens * c
  rows, cols = mcfg.grid_size
  decoder, cin = 0, c
  for _ in range(mcfg.num_deconv_layers):
    rows, cols = 2 * rows, 2 * cols
    # k4 s2: each output pixel sees 2×2 input pixels (the sub-pixel form).
    decoder += 2 * rows * cols * mcfg.deconv_channels * 4 * cin
    cin = mcfg.deconv_channels
  decoder += 2 * rows * cols * cin * mcfg.tasks[0].num_keypoints
  per_image = {'patch_embed': patch, 'blocks': depth * block, 'decoder': decoder}
  out = {k: float(v * batch) for k, v in per_image.items()}
  out['total'] = sum(out.values())
  return out


def matmul_peak(shapes, rounds: int = 5) -> dict:
  """Best f32 matmul rate (FLOP/s) over (m, k, n) shapes, jitted on XLA:CPU."""
  rates = {}
  for m, k, n in shapes:
    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
    fn = jax.jit(jnp.matmul)
    fn(a, b).block_until_ready()
    best = min(timed(lambda fn=fn, a=a, b=b: fn(a, b).block_until_ready(), rounds))
    rates[f'{m}x{k}x{n}'] = 2 * m * k * n / best
  return {'by_shape': rates, 'best': max(rates.values())}


# --- the HF side ----------------------------------------------------------------------------

def hf_model(mcfg: models.ModelConfig, num_labels: int):
  import transformers

  backbone = transformers.VitPoseBackboneConfig(
      hidden_size=mcfg.width, num_hidden_layers=mcfg.depth, num_attention_heads=mcfg.num_heads,
      mlp_ratio=int(mcfg.mlp_ratio), image_size=list(mcfg.image_size),
      patch_size=[mcfg.patch_size] * 2, layer_norm_eps=mcfg.eps)
  config = transformers.VitPoseConfig(backbone_config=backbone, use_simple_decoder=False,
                                      num_labels=num_labels)
  return transformers.VitPoseForPoseEstimation(config)


# --- the measurements -----------------------------------------------------------------------

def bench_inference_and_training(args, results):
  import torch

  torch.set_num_threads(args.torch_threads)
  results['torch'] = {'version': torch.__version__, 'threads': torch.get_num_threads()}
  batch = args.batch
  config = load_config('single_task', f'task=coco,variant={args.variant},batch={batch}')
  config.model.image_size = args.image_size
  ours = OurTrainer(config)
  mcfg = ours.mcfg
  host = random_batch(mcfg, {'coco': batch})
  images = host['coco']['image']
  theirs = hf_model(mcfg, mcfg.tasks[0].num_keypoints)
  n_ours = models.count_params(ours.model)
  n_theirs = sum(p.numel() for p in theirs.parameters())
  print(f'model: ViTPose-{args.variant} classic decoder, {n_ours / 1e6:.2f} M parameters (ours), '
        f'{n_theirs / 1e6:.2f} M (HF); batch {batch}, {args.image_size[0]}x{args.image_size[1]}, '
        f'f32; drop-path {mcfg.drop_path} (ours; HF has none)')
  results['model'] = {'params_ours': n_ours, 'params_hf': n_theirs, 'batch': batch,
                      'image_size': list(args.image_size), 'variant': args.variant}

  # (a) inference
  predictor = Predictor(ours.model, flip_test=False)
  pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  theirs.eval()

  def torch_forward():
    with torch.inference_mode():
      theirs(pixel_values=pixels).heatmaps.numpy()

  times = alternate({'ours': lambda: predictor.heatmaps('coco', images), 'hf': torch_forward},
                    args.iters, args.warmup)
  results['inference'] = a = versus('(a) inference', 'ours (Predictor, jitted)', times, batch)

  # (b) training step
  device_batch = ours.device_batch(host)
  theirs.train()
  optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-3, weight_decay=0.1)
  target = torch.rand(batch, mcfg.tasks[0].num_keypoints, *mcfg.heatmap_size)

  def torch_step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(theirs(pixel_values=pixels).heatmaps, target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    optimizer.step()
    return loss.item()

  times = alternate({'ours': lambda: ours.step(device_batch), 'hf': torch_step},
                    args.iters, args.warmup)
  results['train_step'] = b = versus('(b) training step (forward + backward + AdamW update)',
                                     'ours (train.make_train_step)', times, batch)

  # (c) forward MFU
  peak = matmul_peak(args.peak_shapes)
  flops_xla = ours.forward_flops({'coco': jnp.asarray(images)})
  flops = analytic_forward_flops(mcfg, batch)
  best = a['ours']['best_s']
  c = {'peak_flops': peak, 'flops_cost_analysis': flops_xla, 'flops_analytic': flops,
       'achieved_flops_analytic': flops['total'] / best,
       'mfu_analytic': flops['total'] / best / peak['best'],
       'mfu_cost_analysis': flops_xla / best / peak['best'],
       'torch_mfu_analytic': flops['total'] / a['hf']['best_s'] / peak['best']}
  results['mfu'] = c
  info = results['cpu']
  print('(c) forward MFU')
  print(f'  CPU: {info["model"]}, {info["logical_cpus"]} logical CPUs, thread siblings '
        f'{info["thread_siblings"]}: {"SMT siblings" if info["smt_siblings"] else "no SMT"}'
        f' (each logical CPU is its own core)' * (not info['smt_siblings']))
  shapes = ', '.join(f'{k}: {v / 1e9:.1f}' for k, v in peak['by_shape'].items())
  print(f'  best f32 matmul (XLA:CPU, m x k x n): {peak["best"] / 1e9:.1f} GFLOP/s  ({shapes})')
  print(f'  forward FLOPs, analytic matmul/conv count: {flops["total"] / 1e9:.1f} G '
        f'(patch {flops["patch_embed"] / 1e9:.1f}, blocks {flops["blocks"] / 1e9:.1f}, '
        f'decoder {flops["decoder"] / 1e9:.1f}); XLA cost analysis: {flops_xla / 1e9:.1f} G')
  print(f'  ours: {c["achieved_flops_analytic"] / 1e9:.1f} GFLOP/s = MFU {c["mfu_analytic"]:.1%} '
        f'(analytic), {c["mfu_cost_analysis"]:.1%} (cost analysis); torch: MFU '
        f'{c["torch_mfu_analytic"]:.1%} (analytic)')
  # The speed-up either side could reach at the matmul peak, given its measured time.
  c['inference_speedup_bound'] = a['hf']['best_s'] / (flops['total'] / peak['best'])
  c['train_speedup_bound'] = b['hf']['best_s'] / (3 * flops['total'] / peak['best'])
  print(f'  bound at the matmul peak: inference <= {c["inference_speedup_bound"]:.2f}x torch; '
        f'training (3x forward FLOPs) <= {c["train_speedup_bound"]:.2f}x torch')


def bench_factorized(args, results):
  arg = f'variant={args.variant},batch={args.batch // 4},scratch'
  steps = {}
  for name, expert_dim in (('factorized', -1), ('plain', 0)):
    config = load_config('multitask', arg)
    config.model.image_size = args.image_size
    config.model.expert_dim = expert_dim
    steps[name] = OurTrainer(config)
  counts = {t: c.batch_size for t, c in steps['factorized'].config.tasks.items()}
  batches = {k: s.device_batch(random_batch(s.mcfg, counts)) for k, s in steps.items()}
  times = alternate({k: (lambda k=k: steps[k].step(batches[k])) for k in steps},
                    args.iters, args.warmup)
  total = sum(counts.values())
  d = {k: summary(v, total) for k, v in times.items()}
  d['ratio_best'] = d['factorized']['best_s'] / d['plain']['best_s']
  d['ratio_median'] = d['factorized']['median_s'] / d['plain']['median_s']
  d['expert_dim'] = steps['factorized'].mcfg.expert_dim
  d['counts'] = counts
  results['factorized'] = d
  print(f'(d) 4-task step, ViTPose++-{args.variant} factorized (P={d["expert_dim"]}) vs plain MLP, '
        f'same heads, per task {counts}')
  print(line('factorized', d['factorized']))
  print(line('plain MLP', d['plain']))
  print(f'  ratio factorized/plain step time: {d["ratio_best"]:.3f} (best), '
        f'{d["ratio_median"]:.3f} (median)')


def bench_pipeline(args, results):
  config = load_config('multitask', 'runlocal' if args.small else 'scratch')
  ours = OurTrainer(config)
  iterator, _ = train.train_iterator(config, ours.mcfg)
  prefetch = config.data.prefetch_batches
  fixed = ours.device_batch(next(iterator))
  for _ in range(args.warmup):
    ours.step(fixed)

  def run(feed, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
      ours.step(feed())
    return (time.perf_counter() - t0) / steps

  def settle(timeout=10.0, quiet=0.2):
    # The iterator's threads refill its prefetch buffer whenever steps stop taking batches:
    # wait until they are done (the process uses next to no CPU for `quiet` seconds), so that
    # the in-memory steps do not share the cores with them.
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
      cpu = time.process_time()
      time.sleep(quiet)
      if time.process_time() - cpu < 0.05 * quiet:
        return

  pipe, memory = [], []
  for _ in range(args.pipeline_rounds):
    settle()
    memory.append(run(lambda: fixed, args.pipeline_steps))
    # The iterator filled its prefetch buffer meanwhile: those batches are free, so they are
    # used up before the timing starts and only the steady state counts.
    run(lambda: ours.device_batch(next(iterator)), prefetch + 1)
    pipe.append(run(lambda: ours.device_batch(next(iterator)), args.pipeline_steps))
  total = sum(t.batch_size for t in config.tasks.values())
  e = {'pipeline': summary(pipe, total), 'memory': summary(memory, total),
       'num_workers': config.data.num_workers, 'threads': config.data.threads,
       'prefetch_batches': prefetch, 'variant': config.model.variant, 'global_batch': total}
  e['ratio_best'] = e['pipeline']['best_s'] / e['memory']['best_s']
  e['ratio_median'] = e['pipeline']['median_s'] / e['memory']['median_s']
  results['pipeline'] = e
  print(f'(e) demo config (configs/multitask.py{":runlocal" if args.small else ""}: '
        f'{config.model.variant}, 4 tasks, global batch {total}, {config.data.num_workers} '
        f'workers, {config.data.threads} threads), step time per {args.pipeline_steps} steps')
  print(line('real input pipeline', e['pipeline']))
  print(line('in-memory batch', e['memory']))
  print(f'  ratio pipeline/in-memory step time: {e["ratio_best"]:.3f} (best), '
        f'{e["ratio_median"]:.3f} (median)')


def goals(results) -> dict:
  values = {
      'inference_speedup': results.get('inference', {}).get('speedup_best'),
      'train_speedup': results.get('train_step', {}).get('speedup_best'),
      'mfu_analytic': results.get('mfu', {}).get('mfu_analytic'),
      'factorized_over_plain': results.get('factorized', {}).get('ratio_best'),
      'pipeline_over_memory': results.get('pipeline', {}).get('ratio_best'),
  }
  out = {}
  print('goals (ratios from the best rounds):')
  for name, (key, bound, kind) in GOALS.items():
    value = values[key]
    if value is None:
      continue
    met = value >= bound if kind == 'min' else value <= bound
    out[name] = {'value': value, 'bound': bound, 'kind': kind, 'met': met}
    sign = '>=' if kind == 'min' else '<='
    print(f'  {name:<32} {value:7.3f}  goal {sign} {bound:<5}  {"MET" if met else "MISSED"}')
  return out


def write_results(args, results: dict):
  """``results`` as ``--out``/results.json (results_small.json for a ``--small`` run)."""
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'results_small.json' if args.small else 'results.json')
  with open(path, 'w') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {path}')


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--small', action='store_true',
                      help='tiny model, images and batches: a smoke run for the tests')
  parser.add_argument('--iters', type=int, default=5, help='timed rounds per measurement')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls after compiling')
  parser.add_argument('--pipeline-steps', type=int, default=20,
                      help='(e): steps per timed block')
  parser.add_argument('--pipeline-rounds', type=int, default=3)
  parser.add_argument('--torch-threads', type=int, default=os.cpu_count())
  parser.add_argument('--only', nargs='+', choices=('ab', 'd', 'e'), default=('ab', 'd', 'e'),
                      help='parts to run: ab (with c), d, e')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                                    'bench_vs_pytorch'))
  args = parser.parse_args()
  if args.small:
    args.variant, args.batch, args.image_size = 'micro', 4, (64, 48)
    args.peak_shapes = ((256, 256, 256), (512, 512, 512))
    args.pipeline_steps = min(args.pipeline_steps, 3)
    args.pipeline_rounds = min(args.pipeline_rounds, 2)
  else:
    args.variant, args.batch, args.image_size = 'B', 8, (256, 192)
    # Square sizes and the backbone's own fc1 / fc2 shapes (batch 8 × 192 tokens).
    args.peak_shapes = ((1024,) * 3, (2048,) * 3, (3072,) * 3, (1536, 768, 3072),
                        (1536, 3072, 768))

  results = {'argv': sys.argv[1:], 'small': args.small, 'cpu': cpu_info(),
             'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
             'load_start': os.getloadavg()}
  print(f'vs_pytorch: jax {jax.__version__} on {jax.devices()[0].device_kind} '
        f'x{jax.device_count()}, {results["cpu"]["model"]}; load average at start '
        f'{results["load_start"][0]:.2f}; {args.iters} rounds after {args.warmup} warm-up')
  if 'ab' in args.only:
    bench_inference_and_training(args, results)
  if 'd' in args.only:
    bench_factorized(args, results)
  if 'e' in args.only:
    bench_pipeline(args, results)
  results['load_end'] = os.getloadavg()
  print(f'load average at end {results["load_end"][0]:.2f}')
  results['goals'] = goals(results)
  write_results(args, results)


if __name__ == '__main__':
  main()
