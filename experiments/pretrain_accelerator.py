r"""Does the full-size recipe learn? Networks trained side by side on synthetic adults on one
accelerator, within a fixed wall-time budget, with the AP table of every arm.

  python experiments/pretrain_accelerator.py --out DIR --workdir RUNS           # on a GPU host
  python experiments/pretrain_accelerator.py --out DIR --workdir RUNS --arms micro-256,S-cosine
  python experiments/pretrain_accelerator.py --out DIR --workdir RUNS --small   # any host, tiny
  python experiments/pretrain_accelerator.py --out DIR --plot                   # DIR/ap.png

One command, for a machine lent for minutes (the device of issue 16, point 6):
  1. generates every dataset the arms read (train, val seed 0, test seed ``--test-seed``) in one
     parallel pass, one process per 2000-instance shard, before any arm starts;
  2. trains the arms (``--arms``, default ``S,micro``; ARMS below) at once, each with its share
     of the CPUs as input-pipeline workers and the accelerator shared (none preallocates its
     memory):
     - ``S``: ViTPose-S from scratch, the ``coco`` task alone, 256x192 input, flip as the only
       augmentation, no layer-wise lr decay and no stochastic depth (both are fine-tuning and
       long-schedule regularisers; this is a short from-scratch run); ``S-cosine`` with a cosine
       schedule instead of configs/multitask.py's real-scale step schedule (whose decays never
       come within such a run);
     - ``micro``: experiments/pretrain_synthetic.py's recipe for the shipped model (micro, coco
       and wholebody, 128x96, flip only), with this run's larger training set; ``micro-256`` the
       same at 256x192;
     each an experiments/pretrain_synthetic.py run whose segment stops at the budget's deadline
     (checkpointed; its best checkpoint is the last evaluation's pick);
  3. evaluates each arm's best checkpoint on the test split (``--ship``: a micro arm's
     model-only run directory is a candidate for the zoo, S's is far over the zoo's size budget
     and is kept for its record only);
  4. writes OUT/results.md and OUT/results.json (AP on val seed 0 against samples seen, then
     test), OUT/<arm>.log, OUT/runs.tar (every run's records: config, evals.jsonl,
     segments.json, provenance.json) and OUT/zoo.tar (the micro arms' shipped directories; the
     ``micro`` arm's named ``--ship-name``, the others ``<arm>-adult``).
``--plot`` then draws OUT/ap.png from OUT/results.json (where matplotlib is installed).

The budget is wall time for the whole command (``--budget-minutes``); each arm's schedule is set
in samples (``--samples-s``, ``--samples-micro``) from an estimate of the host's input-pipeline
rate, and the deadline cuts a slower run short rather than overrun the machine's lease. Test
seeds are >= 1000 and never train, select or tune anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAIN = os.path.join(HERE, 'pretrain_synthetic.py')
# Seconds kept after training for the test evaluations and the archives: two processes start,
# compile their evaluation and score 400 instances each.
RESERVE_S = 75.


# The arms ``--arms`` picks from: (network and input arguments of
# experiments/pretrain_synthetic.py, input-pipeline cost per sample relative to 128x96). Each
# trains the arm's tasks (``--tasks``; both by default) from scratch with flip as the only
# augmentation on the same data. S: no layer-wise lr decay nor stochastic depth (fine-tuning and
# long-schedule regularisers; this is a short from-scratch run), configs/multitask.py's
# real-scale step schedule (no decay within such a run: a constant lr after warm-up) unless the
# arm says cosine. micro: the shipped models' recipe.
_S = ['--variant', 'S', '--tasks', 'coco', '--image-size', '256x192', '--batch', '64', '--lr',
      '5e-4', '--set', 'optimizer.layer_decay=1.0', '--set', 'model.drop_path=0.0']
_MICRO = ['--variant', 'micro', '--batch', '32', '--lr', '1e-3']
ARMS = {
    'S': (_S, 1.5),
    'S-cosine': (_S + ['--set', 'schedule.kind=cosine'], 1.5),
    'micro': (_MICRO, 1.0),
    # micro at ViTPose's input: 16x12 tokens instead of 8x6 (experiments/results/learning_curve,
    # arms 128x96-flip-8k and 256x192-flip-8k).
    'micro-256': (_MICRO + ['--image-size', '256x192'], 1.5),
}
# The shippable arms (under the zoo's size budget), and the name each is shipped under in the
# scratch zoo and OUT/zoo.tar; ``--ship-name`` names the micro arm.
SHIPPABLE = ('micro', 'micro-256')


def arms(args) -> dict[str, list[str]]:
  """Each chosen arm's experiments/pretrain_synthetic.py arguments (without workdir and limits)."""
  out = {}
  for name in args.arms:
    if args.small:
      net = ['--variant', 'nano', '--batch', '4', '--image-size', '64x48']
      net += ['--tasks', 'coco'] if name.startswith('S') else []
      samples, every, warmup = 32, 16, 1
    else:
      net = ARMS[name][0]
      samples = args.samples_s if name.startswith('S') else args.samples_micro
      every, warmup = samples // 6, 500
      if name.startswith('S'):  # checkpoint at evaluations only: S's state is ~300 MB
        net = net + ['--set', f'checkpoint.every_steps={every // 64}']
    out[name] = net + [
        '--samples', str(samples), '--eval-every', str(every), '--warmup-steps', str(warmup),
        '--num-train-coco', str(args.num_train_coco), '--num-train-wholebody',
        str(args.num_train_wholebody), '--num-val', str(args.num_val), '--augment', 'flip']
  return out


def ship_names(args) -> dict[str, str]:
  return {name: args.ship_name if name == 'micro' else f'{name}-adult' for name in args.arms}


def specs(args) -> list[tuple[str, str, int, int]]:
  """Every synthetic dataset the arms read; the 2000-instance shards of the largest come first
  in the job list, so they start first."""
  out = [('adult', 'train', args.num_train_coco, 0),
         ('adult_wholebody', 'train', args.num_train_wholebody, 0)]
  for seed in (0, args.test_seed):
    n = args.num_val if seed == 0 else args.num_test
    out += [('adult', 'val', n, seed), ('adult_wholebody', 'val', n, seed)]
  return out


def workers(names, cpus: int) -> dict[str, int]:
  """Input-pipeline worker processes per arm, the CPUs left after the arms' main processes
  shared in proportion to each arm's cost per sample (a 256x192 crop costs more than a 128x96
  one), at least one each."""
  free = max(len(names), cpus - len(names))
  cost = {name: ARMS[name][1] for name in names}
  share = {name: max(1, int(free * c / sum(cost.values()))) for name, c in cost.items()}
  for name in sorted(names, key=lambda n: -cost[n])[:max(0, free - sum(share.values()))]:
    share[name] += 1  # the remainder to the costlier arms
  return share


def table(evals: list[dict], keys: list[str]) -> list[list[str]]:
  return [[str(e['step']), str(e.get('samples_seen', '')),
           *(f'{e[k]:.3f}' if isinstance(e.get(k), (int, float)) else '' for k in keys)]
          for e in evals]


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _arm_list(text: str) -> list[str]:
  names = [n for n in text.split(',') if n]
  unknown = [n for n in names if n not in ARMS]
  if not names or unknown or len(set(names)) != len(names):
    raise argparse.ArgumentTypeError(f'--arms {text!r}: a comma list of distinct arms from '
                                     f'{", ".join(ARMS)}')
  return names


def _segments(workdir: str, name: str) -> list[dict]:
  path = os.path.join(workdir, name, 'segments.json')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def plot(out: str) -> str:
  """OUT/ap.png: val coco AP against samples seen for each arm of OUT/results.json, beside the
  CPU-trained zoo:micro-adult's curve (experiments/results/pretrain_synthetic/evals.jsonl).
  A micro arm's samples are both tasks', half of them coco."""
  import learning_curve

  with open(os.path.join(out, 'results.json')) as f:
    results = json.load(f)
  curves = {f'{name} ({results["device"].split(";")[0]})':
            [(e['samples_seen'], e['coco/AP']) for e in arm['evals']]
            for name, arm in results['arms'].items()}
  cpu = read_jsonl(os.path.join(HERE, 'results', 'pretrain_synthetic', 'evals.jsonl'))
  if cpu:
    curves['zoo:micro-adult (2-core CPU)'] = [(e['samples_seen'], e['coco/AP']) for e in cpu]
  path = os.path.join(out, 'ap.png')
  learning_curve.line_plot(curves, path, 'val coco AP (seed 0, 200 adults)')
  return path


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='results folder')
  parser.add_argument('--plot', action='store_true',
                      help="only draw OUT/ap.png from OUT/results.json (needs the 'plots' extra)")
  parser.add_argument('--workdir', help='folder of the two runs (required unless --plot)')
  parser.add_argument('--budget-minutes', type=float, default=9.0,
                      help='wall time of the whole command (default 9)')
  parser.add_argument('--samples-s', type=int, default=320_000)
  parser.add_argument('--samples-micro', type=int, default=320_000)
  parser.add_argument('--num-train-coco', type=int, default=16_000)
  parser.add_argument('--num-train-wholebody', type=int, default=4_000)
  parser.add_argument('--num-val', type=int, default=200)
  parser.add_argument('--num-test', type=int, default=200)
  parser.add_argument('--test-seed', type=int, default=1000)
  parser.add_argument('--source-commit', default='',
                      help='the commit a tree without git was copied from (provenance)')
  parser.add_argument('--arms', default='S,micro', type=_arm_list,
                      help=f'comma list of arms from {", ".join(ARMS)} (default S,micro)')
  parser.add_argument('--ship-name', default='micro-adult-v2',
                      help="the micro arm's name in OUT/zoo.tar (zoo:NAME once shipped)")
  parser.add_argument('--small', action='store_true', help='tiny sizes: checks the plumbing')
  args = parser.parse_args(argv)
  if not (args.plot or args.workdir):
    parser.error('--workdir is required')
  if args.small:
    args.num_train_coco = args.num_train_wholebody = 8
    args.num_val = args.num_test = 4
  return args


def main(argv=None):
  args = parse(argv)
  if args.plot:
    print(plot(args.out))
    return 0
  if args.test_seed < 1000:
    raise SystemExit(f'--test-seed {args.test_seed}: test seeds are >= 1000')
  start = time.monotonic()
  deadline = start + 60 * args.budget_minutes
  command = common.command_line(__file__)
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(args.workdir, exist_ok=True)

  # No JAX in this process: the arms share the accelerator, and the generator forks.
  from vitpose_jax.synthetic import cache

  print(f'{os.cpu_count()} CPUs; budget {args.budget_minutes} min', flush=True)
  cache.generate_datasets(specs(args))
  generated_s = time.monotonic() - start

  env = {**os.environ, 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false', 'PYTHONUNBUFFERED': '1'}
  limit_min = (deadline - RESERVE_S - time.monotonic()) / 60
  if limit_min < 0.5:
    raise SystemExit(f'generating the data took {generated_s:.0f} s: no time left to train in '
                     f'a {args.budget_minutes}-minute budget')
  share = workers(args.arms, os.cpu_count() or 2)
  source = ['--source-commit', args.source_commit] if args.source_commit else []
  procs, logs = {}, {}
  for name, extra in arms(args).items():
    logs[name] = open(os.path.join(args.out, f'{name}.log'), 'w')
    cmd = [sys.executable, PRETRAIN, '--workdir', os.path.join(args.workdir, name), *extra,
           *source, '--set', f'data.num_workers={share[name]}', '--builder-priority', '0',
           '--max-minutes', f'{limit_min:.2f}']
    print('$ ' + ' '.join(cmd), flush=True)
    procs[name] = subprocess.Popen(cmd, stdout=logs[name], stderr=subprocess.STDOUT, env=env)
  status = {name: p.wait() for name, p in procs.items()}
  trained_s = time.monotonic() - start
  print(f'training ended at {trained_s:.0f} s: exit codes {status}', flush=True)

  shipped = {}
  ship_name = ship_names(args)
  zoo_dir = os.path.join(args.workdir, 'zoo')
  ships = {name: subprocess.Popen(
      [sys.executable, PRETRAIN, '--workdir', os.path.join(args.workdir, name), '--ship',
       ship_name[name], '--zoo-dir', zoo_dir, '--num-test', str(args.num_test),
       '--test-seed', str(args.test_seed)], stdout=logs[name], stderr=subprocess.STDOUT, env=env)
      for name in procs if os.path.exists(os.path.join(args.workdir, name, 'evals.jsonl'))}
  for name, p in ships.items():
    record = os.path.join(zoo_dir, ship_name[name], 'provenance.json')
    if p.wait() == 0 and os.path.exists(record):
      with open(record) as f:
        shipped[name] = json.load(f)
  for log in logs.values():
    log.close()

  keys = {name: ['coco/AP', 'coco/AP50', 'coco/PCK@0.2']
          + ([] if '--tasks' in extra else ['wholebody/AP_body', 'mean/AP'])
          for name, extra in arms(args).items()}
  device = next((s['device'] for name in procs for s in _segments(args.workdir, name)),
                'unknown')
  rows, data = [], {'device': device, 'cpus': os.cpu_count(), 'workers': share,
                    'generate_s': round(generated_s, 1), 'train_end_s': round(trained_s, 1),
                    'exit_codes': status, 'arms': {}}
  for name, extra in arms(args).items():
    run = os.path.join(args.workdir, name)
    evals = read_jsonl(os.path.join(run, 'evals.jsonl'))
    segments = _segments(args.workdir, name)
    test = shipped.get(name, {}).get('test_metrics', {})
    data['arms'][name] = {'args': extra, 'evals': evals, 'segments': segments,
                          'test_metrics': test, 'best': shipped.get(name, {}).get('best')}
    for row in table(evals, keys[name]):
      rows.append([name, 'val s0', *row, *([''] * (5 - len(keys[name])))])
    if test:
      best = shipped[name]
      rows.append([name, f'test s{args.test_seed} (best)', str(best['step']),
                   str(best['samples_seen']),
                   *(f'{test[k]:.3f}' if k in test else '' for k in keys[name]),
                   *([''] * (5 - len(keys[name])))])
  preamble = (f'{device}, {os.cpu_count()} CPUs (input-pipeline workers {share}); data '
              f'generated in {generated_s:.0f} s; training ended {trained_s:.0f} s after the '
              f'start (exit codes {status}: 143 is the deadline\'s stop). AP is COCO OKS AP, '
              f'ground-truth boxes, flip test; val is seed 0 ({args.num_val} per task), test seed '
              f'{args.test_seed}; the test row is the best val checkpoint.')
  header = ['arm', 'split', 'step', 'samples seen', 'coco AP', 'coco AP50', 'coco PCK@0.2',
            'wholebody AP_body', 'mean AP']
  print(common.write_results(args.out, command, preamble, header, rows, data), flush=True)

  with tarfile.open(os.path.join(args.out, 'runs.tar'), 'w') as tar:
    for name in procs:
      run = os.path.join(args.workdir, name)
      for leaf in ('config.json', 'model.json', 'evals.jsonl', 'metrics.jsonl', 'segments.json'):
        if os.path.exists(os.path.join(run, leaf)):
          tar.add(os.path.join(run, leaf), arcname=f'{name}/{leaf}')
      record = os.path.join(args.workdir, 'zoo', ship_name[name], 'provenance.json')
      if os.path.exists(record):
        tar.add(record, arcname=f'{name}/provenance.json')
  shippable = [n for n in procs if n in SHIPPABLE
               and os.path.isdir(os.path.join(args.workdir, 'zoo', ship_name[n]))]
  if shippable:
    with tarfile.open(os.path.join(args.out, 'zoo.tar'), 'w') as tar:
      for name in shippable:
        tar.add(os.path.join(args.workdir, 'zoo', ship_name[name]), arcname=ship_name[name])
  print(f'done in {time.monotonic() - start:.0f} s', flush=True)
  return 0 if shipped else 1


if __name__ == '__main__':
  sys.exit(main())
