"""What the experiment scripts share: configs with overrides, resumable runs, synthetic data specs,
the results table (markdown + JSON, the command at the top) and a grouped bar plot (matplotlib)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Experiments train many short runs: no pictures, one checkpoint at the end, sparse logging.
QUIET = {'plots': 0, 'checkpoint.every_steps': 10**9, 'log_every_steps': 50}


def command_line(script: str) -> str:
  return 'python ' + ' '.join(shlex.quote(a) for a in
                              [os.path.relpath(script, ROOT)] + sys.argv[1:])


def config_module(name: str):
  """The module of configs/NAME.py (its constants: data populations, the source model, ...)."""
  from vitpose_jax import configlib

  return configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), name)


def config(name: str, arg: str, overrides: Mapping):
  """configs/NAME.py:ARG with dotted-key ``overrides``; short runs keep a warm-up that fits."""
  from vitpose_jax import configlib

  cfg = configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), name).get_config(arg)
  configlib.override(cfg, overrides)
  with cfg.unlocked():
    cfg.schedule.warmup_steps = min(cfg.schedule.warmup_steps, cfg.total_steps // 5)
  return cfg


def run(cfg, workdir: str, runner: Callable) -> dict:
  """``runner(cfg, workdir)`` unless WORKDIR/metrics.json exists (a finished run is reused)."""
  done = os.path.join(workdir, 'metrics.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  print(f'--- {workdir}', flush=True)
  return runner(cfg, workdir)


def flip_only() -> dict:
  """Overrides leaving flip as the only augmentation: configs/multitask.py's FLIP_ONLY, the
  recipe of its default (adapting) run."""
  from vitpose_jax import configlib

  multitask = configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), 'multitask')
  return {f'data.augment.{k}': v for k, v in multitask.FLIP_ONLY.items()}


def population(task: str) -> str:
  from vitpose_jax import configlib

  tasks = configlib.sibling_config(os.path.join(ROOT, 'configs', 'x.py'), 'multitask').TASKS
  return tasks[task][1]


def synthetic_data(tasks: Sequence[str], num_train: int | Mapping[str, int],
                   num_val: int) -> dict:
  """Overrides pointing each task's train / val data (and so its evaluation) at the synthetic
  population; the generator draws instance i from (seed, split, population, i), so a smaller
  ``num_train`` is a prefix of a larger one."""
  out = {}
  for task in tasks:
    n = num_train[task] if isinstance(num_train, Mapping) else num_train
    out[f'tasks.{task}.train'] = dict(source='synthetic', population=population(task), num=n,
                                      seed=0)
    out[f'tasks.{task}.val'] = dict(source='synthetic', population=population(task), num=num_val,
                                    seed=0)
  return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  return float(np.mean(values)), float(np.std(values))


def pm(mean: float, std: float, seeds: int = 2) -> str:
  """``mean ± std`` over seeds; the value alone for a single seed."""
  return f'{mean:.4f} ± {std:.4f}' if seeds > 1 else f'{mean:.4f}'


def write_results(out: str, command: str, preamble: str, header: Sequence[str],
                  rows: Sequence[Sequence[str]], data: dict):
  """RESULTS/results.md (command, preamble, table) and RESULTS/results.json; returns the text."""
  lines = [f'`{command}`', '', preamble, '', '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  text = '\n'.join(lines) + '\n'
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'results.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({'command': command, **data}, f, indent=1)
  return text


def bar_plot(table: Mapping[str, Mapping[str, tuple[float, float]]], groups: Sequence[str],
             path: str, ylabel: str):
  """Grouped bars: ``table[arm][group] = (mean, std)``, one colour per arm, std as an error bar;
  an arm without a group (not run there) leaves its slot empty. Written to ``path`` (PNG) with
  matplotlib's Agg canvas (the ``plots`` extra); returns the matplotlib Figure."""
  fig = figure(width=max(6.0, 0.35 * len(table) * len(groups) + 2.0))
  axes = fig.subplots()
  width = 0.8 / max(1, len(table))
  for a, (arm, cells) in enumerate(table.items()):
    present = [g for g, group in enumerate(groups) if group in cells]
    axes.bar([g + (a - (len(table) - 1) / 2) * width for g in present],
             [cells[groups[g]][0] for g in present], width,
             yerr=[cells[groups[g]][1] for g in present], capsize=2, label=arm, color=f'C{a}')
  axes.set_xticks(range(len(groups)), groups)
  axes.set_ylabel(ylabel)
  axes.set_title('bars: mean; error bars: ± std over seeds', fontsize='small')
  axes.legend(fontsize='small', ncols=min(len(table), 4), loc='lower center',
              bbox_to_anchor=(0.5, 1.08), frameon=False)
  fig.savefig(path, dpi=100, bbox_inches='tight')
  return fig


def figure(width: float, height: float = 4.0):
  """A matplotlib Figure outside pyplot (no global state, no display: PNGs are drawn on the Agg
  canvas), with a clear message when the ``plots`` extra is missing."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError('the experiment plots need matplotlib: pip install -e ".[plots]"') from e
  fig = Figure(figsize=(width, height), layout='constrained')
  FigureCanvasAgg(fig)
  return fig
