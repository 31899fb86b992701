r"""The general "adult" model: pretrains the `coco` and `wholebody` tasks on synthetic adults and
ships the result inside the package as ``zoo:<name>`` with its provenance record.

  python experiments/pretrain_synthetic.py --workdir /tmp/pretrain_adult            # train
  python experiments/pretrain_synthetic.py --workdir /tmp/pretrain_adult --ship micro-adult

Training is configs/multitask.py (micro, tasks coco+wholebody) with these levers: a 128x96 input
(about 5x cheaper per sample than 256x192), 8k synthetic adults and 2k whole-body adults (ten
times the default run's; more is `--num-train-coco` / `--num-train-wholebody`), flip as the only
augmentation (experiments/results/learning_curve; ``--augment light`` adds small scale, rotation
and centre jitter: the recipe of zoo:micro-adult), and an evaluation every
``--eval-every`` samples on the val split at seed 0, which also picks the best checkpoint (by
mean/AP). Re-running the same command resumes after any interruption (Ctrl-C or SIGTERM write a
checkpoint first); the wall time of every segment is logged to WORKDIR/segments.json.
``--max-minutes`` stops a segment after that much wall time (setup included) the same way (a
SIGTERM to itself), for a machine lent for a fixed time; the run's best checkpoint is then the last
evaluation's pick.

Other shapes of the same recipe: ``--tasks coco`` (one task), ``--image-size 256x192``,
``--variant S``, and ``--set KEY=VALUE`` for any other config key (VALUE read as JSON when it
parses, e.g. ``--set optimizer.layer_decay=1.0 --set data.num_workers=8``). Where the tree is a
copy without git (a remote accelerator), ``--source-commit`` names the commit it was copied
from, and the record says the commit was given rather than read.

``--ship NAME`` takes the run's best checkpoint, evaluates it on the test split (synthetic seed
``--test-seed``, >= 1000: test seeds are never used for training, selection or tuning), and writes
vitpose_jax/zoo/NAME/: model.json, one checkpoint holding only the network, config.json, and
provenance.json (command, commit, generator version, data specs and seeds, steps, samples seen,
wall time, device, validation and test metrics). Run it from one pinned commit (a separate git
worktree), so that the code that trained the model is the commit its record names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

import common

TASKS = ('coco', 'wholebody')
# learning_curve.py's arms: flip only, or LIGHT (flip, scale ±25 %, rotation ±20° with p 0.3,
# centre jitter; no half-body crops). At 32k samples on 8k instances flip only reached val coco
# AP 0.088 against 0.029 (experiments/results/learning_curve), hence the default; zoo:micro-adult
# was trained with 'light', chosen before those arms ran.
AUGMENT = {
    'flip': {'data.augment.half_body_prob': 0.0, 'data.augment.scale_factor': 0.0,
             'data.augment.rotation_prob': 0.0, 'data.augment.jitter_prob': 0.0},
    'light': {'data.augment.half_body_prob': 0.0, 'data.augment.scale_factor': 0.25,
              'data.augment.rotation_factor': 20.0, 'data.augment.rotation_prob': 0.3,
              'data.augment.jitter_prob': 0.3, 'data.augment.jitter_factor': 0.2},
}


def _commit(given: str = '') -> dict:
  """The commit the code runs from: ``given`` (for a copied tree, whose cleanliness nobody can
  check here: ``dirty`` is None), else git's HEAD and whether tracked files differ from it."""
  def git(*args):
    try:
      done = subprocess.run(['git', '-C', common.ROOT, *args], capture_output=True, text=True,
                            check=False)
    except OSError:  # no git installed
      return None
    return done.stdout.strip() if done.returncode == 0 else None

  if given:  # a copy's .git, if it has one, need not be the copied commit's
    return {'commit': given, 'dirty': None, 'commit_source': 'given (--source-commit)'}
  head = git('rev-parse', 'HEAD')
  if not head:
    raise SystemExit(f'{common.ROOT} is not a git checkout: name the commit it was copied '
                     'from with --source-commit')
  return {'commit': head, 'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}


def _device() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  d = jax.devices()[0]
  return f'{d.platform} x{jax.device_count()} ({d.device_kind}); host {cpu}, {os.cpu_count()} CPUs'


def _image_size(text: str) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in text.lower().split('x'))
  except ValueError:
    raise argparse.ArgumentTypeError(f'image size {text!r}: expected HxW, e.g. 128x96') from None
  return h, w


def _setting(text: str) -> tuple[str, object]:
  key, sep, value = text.partition('=')
  if not sep or not key:
    raise argparse.ArgumentTypeError(f'--set {text!r}: expected KEY=VALUE')
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def _tasks(text: str) -> tuple[str, ...]:
  tasks = tuple(t for t in text.split(',') if t)
  unknown = sorted(set(tasks) - set(TASKS))
  if not tasks or unknown or len(set(tasks)) != len(tasks):
    raise argparse.ArgumentTypeError(f'--tasks {text!r}: a comma list of distinct names from '
                                     f'{", ".join(TASKS)}')
  return tasks


def make_config(args):
  data = {}
  for task in args.tasks:
    population = common.population(task)
    data[f'tasks.{task}.train'] = dict(source='synthetic', population=population,
                                       num=args.num_train[task], seed=0)
    data[f'tasks.{task}.val'] = dict(source='synthetic', population=population,
                                     num=args.num_val, seed=0)
  per_step = len(args.tasks) * args.batch
  steps = args.samples // per_step
  every = max(1, args.eval_every // per_step)
  overrides = {
      **data, 'total_steps': steps, 'model.image_size': args.image_size,
      **AUGMENT[args.augment],
      'optimizer.lr': args.lr, 'schedule.warmup_steps': args.warmup_steps,
      'eval_every_steps': every, 'checkpoint.every_steps': min(every, 500),
      'log_every_steps': 100, 'plots': 4,
      'data.builder_priority': args.builder_priority,
      'checkpoint.best_metric': 'mean/AP' if len(args.tasks) > 1 else f'{args.tasks[0]}/AP',
      **dict(args.set),
  }
  return common.config('multitask', f'variant={args.variant},tasks={"+".join(args.tasks)},'
                       f'scratch,batch={args.batch}', overrides)


def train(args, command: str):
  from vitpose_jax import train as trainer

  cfg = make_config(args)
  os.makedirs(args.workdir, exist_ok=True)
  log_path = os.path.join(args.workdir, 'segments.json')
  segments = []
  if os.path.exists(log_path):
    with open(log_path) as f:
      segments = json.load(f)
  start = time.time()
  segment = {'command': command, **_commit(args.source_commit), 'device': _device(),
             'started': time.ctime(start)}
  timer = None
  if args.max_minutes:
    # The trainer's SIGTERM handling checkpoints the current step and stops.
    timer = threading.Timer(60 * args.max_minutes, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()

  def record(status: str):
    segment.update(status=status, wall_s=round(time.time() - start, 1))
    with open(log_path + '.tmp', 'w') as f:
      json.dump(segments + [segment], f, indent=1)
    os.replace(log_path + '.tmp', log_path)

  try:
    metrics = trainer.train_and_evaluate(cfg, args.workdir)
  except SystemExit as e:
    timed_out = timer is not None and not timer.is_alive() and e.code == 143
    record(f'stopped at --max-minutes {args.max_minutes}' if timed_out else 'interrupted')
    raise
  except BaseException:
    record('interrupted')
    raise
  finally:
    if timer is not None:
      timer.cancel()
  record('finished')
  print(json.dumps(metrics))


def ship(args, command: str):
  from vitpose_jax import checkpoint, zoo
  from vitpose_jax import synthetic
  from vitpose_jax.evaluation import run_evaluators
  from vitpose_jax.predict import Predictor

  if args.test_seed < 1000:
    raise SystemExit(f'--test-seed {args.test_seed}: test seeds are >= 1000')
  with open(os.path.join(args.workdir, 'config.json')) as f:
    run_config = json.load(f)
  with open(os.path.join(args.workdir, 'segments.json')) as f:
    segments = json.load(f)
  best = checkpoint.read_best(args.workdir)
  model, step = checkpoint.load_model(args.workdir, step='best' if best else None)
  batch = sum(t['batch_size'] for t in run_config['tasks'].values())
  evals = {t: dict(type='keypoints', task=t, batch_size=64,
                   data=dict(run_config['tasks'][t]['val'], num=args.num_test,
                             seed=args.test_seed)) for t in run_config['tasks']}
  test = run_evaluators(evals, Predictor(model))
  val = run_evaluators({t: dict(e, data=run_config['tasks'][t]['val'])
                        for t, e in evals.items()}, Predictor(model))
  dst = os.path.join(args.zoo_dir or zoo.ZOO_DIR, args.ship)
  if os.path.exists(dst):
    raise SystemExit(f'{dst} exists: a shipped model is never replaced in place')
  tmp = dst + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  checkpoint.save_model(tmp, model, step=step)
  shutil.copy(os.path.join(args.workdir, 'config.json'), os.path.join(tmp, 'config.json'))
  commits = sorted({s['commit'] for s in segments})
  dirty = [s['dirty'] for s in segments]
  record = {
      'name': args.ship,
      'command': [s['command'] for s in segments],
      'ship_command': command,
      'commit': commits[0] if len(commits) == 1 else commits,
      # None: a segment ran from a copy whose commit was given, and nobody could check it.
      'dirty_tree': True if True in dirty else (None if None in dirty else False),
      'generator_version': synthetic.GENERATOR_VERSION,
      'data': {t: {'train': run_config['tasks'][t]['train'], 'val': run_config['tasks'][t]['val'],
                   'test': evals[t]['data']} for t in run_config['tasks']},
      'step': step, 'samples_seen': step * batch, 'batch': batch,
      'best': best,
      'wall_time_s': round(sum(s.get('wall_s', 0) for s in segments), 1),
      'segments': segments,
      'device': sorted({s['device'] for s in segments}),
      'val_metrics': {k: v for k, v in val.items() if isinstance(v, (int, float))},
      'test_metrics': {k: v for k, v in test.items() if isinstance(v, (int, float))},
      'metrics_note': 'ground-truth boxes, flip test, DARK-UDP decoding',
  }
  with open(os.path.join(tmp, zoo.PROVENANCE), 'w') as f:
    json.dump(record, f, indent=1)
  os.rename(tmp, dst)
  print(json.dumps(record['test_metrics']))


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--ship', default='', help='ship the best checkpoint as zoo:NAME')
  parser.add_argument('--zoo-dir', default='',
                      help="where --ship writes (default: the package's zoo folder)")
  parser.add_argument('--variant', default='micro')
  parser.add_argument('--tasks', type=_tasks, default=TASKS,
                      help=f'comma list of tasks to train (default {",".join(TASKS)})')
  parser.add_argument('--image-size', type=_image_size, default=(128, 96),
                      help='network input HxW (default 128x96)')
  parser.add_argument('--set', type=_setting, action='append', default=[], metavar='KEY=VALUE',
                      help='any other config override, VALUE as JSON where it parses; repeatable')
  parser.add_argument('--max-minutes', type=float, default=0.,
                      help='stop this segment after this many minutes (checkpointed; 0: none)')
  parser.add_argument('--source-commit', default='',
                      help='the commit a tree without git was copied from (provenance)')
  parser.add_argument('--samples', type=int, default=1_200_000, help='samples seen (all tasks)')
  parser.add_argument('--batch', type=int, default=32, help='per-task batch share')
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--augment', choices=sorted(AUGMENT), default='flip')
  parser.add_argument('--warmup-steps', type=int, default=500)
  parser.add_argument('--num-train-coco', type=int, default=8_000)
  parser.add_argument('--num-train-wholebody', type=int, default=2_000)
  parser.add_argument('--num-val', type=int, default=200)
  parser.add_argument('--eval-every', type=int, default=64_000, help='samples between evals')
  # A long run shares its machine with other work: batch builders below the other processes'
  # priority starve (measured here: 41 img/s at nice 10 against a test suite at nice 5).
  parser.add_argument('--builder-priority', default='0',
                      help="config.data.builder_priority: a nice value or 'idle' (default 0)")
  parser.add_argument('--num-test', type=int, default=200)
  parser.add_argument('--test-seed', type=int, default=1000)
  args = parser.parse_args(argv)
  args.num_train = {'coco': args.num_train_coco, 'wholebody': args.num_train_wholebody}
  return args


def main(argv=None):
  args = parse(argv)
  command = common.command_line(__file__)
  if args.ship:
    ship(args, command)
  else:
    train(args, command)


if __name__ == '__main__':
  sys.exit(main())
