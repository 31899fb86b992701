"""Every config field a user may set takes a command-line override of the type they would expect,
every command the docs give parses, and a duration may be given in any unit."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections.config_flags import config_path

from vitpose_jax import configlib, main, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md', 'configs/README.md'] + sorted(
    f'configs/{f}' for f in os.listdir(os.path.join(ROOT, 'configs')) if f.endswith('.py'))

# The config arguments each file is audited under: the defaults and the arguments that change
# which fields exist or what they hold.
CONFIGS = ['multitask.py', 'multitask.py:variant=B', 'multitask.py:runlocal',
           'multitask.py:scratch', 'multitask.py:variant=B,runlocal', 'single_task.py:task=infant',
           'finetune.py', 'finetune.py:epochs=2', 'finetune.py:train=heads,augment=none',
           'distill.py:stage=tokens',
           'distill.py:stage=student', 'distill.py:stage=student,runlocal',
           'adapt.py:method=adversarial', 'adapt.py:method=crossschema']

# Overrides the docs name in their text rather than in a full command (each documented
# `--config.KEY` must be tried here or in a documented command; see
# test_every_override_the_docs_name_is_tried).
OVERRIDES = [
    ('multitask.py:variant=B', ['--config.total_steps=100']),
    ('multitask.py', ['--config.total_epochs=2']),
    ('multitask.py:variant=B', [
        "--config.tasks.coco.train={'source': 'coco', 'annotations': 'a.json', 'images': 'i/'}"]),
    ('single_task.py:task=infant', [
        "--config.tasks.infant.train={'source': 'coco', 'annotations': 't.json', 'images': 'i/'}",
        "--config.tasks.infant.val={'source': 'coco', 'annotations': 'v.json', 'images': 'i/'}"]),
    ('distill.py:stage=student', ['--config.teacher=/tmp/t', '--config.tokens_from=/tmp/k']),
    ('finetune.py:train=heads,augment=none', ['--config.feature_cache=off',
                                              '--config.data.sigma=6.0']),
    ('finetune.py:tasks=infant,train=heads,augment=none,batch=32',
     ['--config.model.dtype=bfloat16']),
    ('multitask.py', ["--config.evals.coco.data={'source': 'synthetic', 'population': 'adult', "
                      "'num': 4, 'seed': 7}"]),
    ('adapt.py:method=meanteacher,prior', [
        "--config.tasks.target.train={'source': 'coco', 'annotations': 'a.json', 'images': 'i/', "
        "'labels': False}",
        "--config.tasks.target.val={'source': 'coco', 'annotations': 'v.json', 'images': 'i/'}",
        "--config.adapt.prior.poses={'source': 'coco', 'annotations': 'p.json', 'images': 'i/'}"]),
    ('adapt.py:method=meanteacher', [
        "--config.tasks.target.train={'source': 'detections', 'detections': 'd.json', "
        "'images': 'i/'}"]),
    ('adapt.py:method=source', [
        "--config.evals.target.data={'source': 'coco', 'annotations': 'v.json', 'images': 'i/'}"]),
    ('adapt.py:method=adversarial,schema=coco17', [
        "--config.tasks.synthetic.train={'source': 'synthetic', 'population': 'adult', "
        "'num': 8000}",
        "--config.adapt.domains={'adult': ('synthetic',), 'infant': ('target', 'unlabeled')}"]),
    ('adapt.py:method=crossschema', [
        "--config.tasks.target.train={'source': 'coco', 'annotations': 'a.json', 'images': 'i/', "
        "'subset': (0, 0.1)}",
        "--config.tasks.unlabeled.train={'source': 'coco', 'annotations': 'a.json', "
        "'images': 'i/', 'subset': (0.1, 1), 'labels': False}"]),
]


def _resolve(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The config main.py trains on for ``--config=configs/SPEC`` and ``overrides``."""
  argv = ['main', f'--config={os.path.join(ROOT, "configs", spec)}', *overrides]
  flag_values = flags.FlagValues()
  main.define_config_flag(flag_values, sys_argv=argv)
  flag_values(argv)
  return main.resolved_config(flag_values['config'])


def _get(config: ml_collections.ConfigDict, key: str):
  value = config_path.get_value(key, config)
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _expected(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _documented_commands() -> list[tuple[str, str, list[str]]]:
  """(doc, config spec, overrides) of every ``python -m vitpose_jax.main`` command in DOCS."""
  commands = []
  for doc in DOCS:
    text = open(os.path.join(ROOT, doc)).read().replace('\\\n', ' ')
    for line in text.splitlines():
      if 'python -m vitpose_jax.main --config=' not in line:
        continue
      command = line[line.index('python -m vitpose_jax.main'):].split('`')[0]
      args = shlex.split(command)[3:]
      spec, = [a.removeprefix('--config=configs/') for a in args if a.startswith('--config=')]
      commands.append((doc, spec, [a for a in args if a.startswith('--config.')]))
  return commands


COMMANDS = _documented_commands()


def test_the_docs_give_commands():
  assert len(COMMANDS) >= 15
  assert {spec.split(':')[0] for _, spec, _ in COMMANDS} == {
      'multitask.py', 'single_task.py', 'finetune.py', 'distill.py', 'adapt.py'}


@pytest.mark.parametrize('doc,spec,overrides', COMMANDS + [('', s, o) for s, o in OVERRIDES],
                         ids=[f'{d}:{s}:{" ".join(o)}' for d, s, o in COMMANDS]
                         + [f'{s}:{" ".join(o)}' for s, o in OVERRIDES])
def test_documented_command_parses_with_its_overrides_and_one_duration(doc, spec, overrides):
  del doc
  config = _resolve(spec, overrides)
  for override in overrides:
    key, _, value = override.removeprefix('--config.').partition('=')
    assert _get(config, key) == _expected(value), override
  steps = optim.steps_from(config, steps_per_epoch=10, batch_size=8)
  given = [o for o in overrides if o.startswith('--config.total_steps=')]
  if given:
    assert steps == int(given[0].partition('=')[2])


def test_every_override_the_docs_name_is_tried():
  tried = {o.partition('=')[0] for _, _, overrides in COMMANDS for o in overrides}
  tried |= {o.partition('=')[0] for _, overrides in OVERRIDES for o in overrides}
  named = set()
  for doc in DOCS:
    named |= set(re.findall(r'--config\.[\w.<>]+\w', open(os.path.join(ROOT, doc)).read()))
  patterns = {n: re.compile(re.escape(n).replace('<task>', r'\w+')) for n in named}
  untried = sorted(n for n, p in patterns.items() if not any(p.fullmatch(t) for t in tried))
  assert not untried, f'documented overrides no test tries (add them to OVERRIDES): {untried}'


def _leaves(config: ml_collections.ConfigDict, prefix: str = ''):
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


_SAMPLES = {int: 7, float: 2.5, str: 'x', ml_collections.ConfigDict: {'source': 'synthetic'}}


@pytest.mark.parametrize('spec', CONFIGS)
def test_every_field_takes_an_override_of_its_type(spec):
  config = _resolve(spec, [])
  wanted = {}
  for key, value in _leaves(config):
    if re.search(r'(^|\.)total_(steps|epochs|examples)$', key):
      continue  # one unit at a time: test_duration_in_any_unit
    kind = config_path.get_type(key, config)
    assert kind in (int, float, str, bool, tuple, ml_collections.ConfigDict), (
        f'{spec}: {key} = {value!r} has type {kind.__name__}, which no override can set')
    if value is None or (isinstance(value, ml_collections.ConfigDict) and not len(value)):
      value = _SAMPLES[kind]
    wanted[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  overrides = [f'--config.{k}={str(v).lower() if isinstance(v, bool) else v}'
               for k, v in wanted.items()]
  again = _resolve(spec, overrides)
  assert {k: _get(again, k) for k in wanted} == wanted


@pytest.mark.parametrize('spec', CONFIGS)
@pytest.mark.parametrize('unit,value,steps', [('steps', '120', 120), ('epochs', '2.5', 25),
                                              ('examples', '100', 13)])
def test_duration_in_any_unit_replaces_the_config_files_own(spec, unit, value, steps):
  config = _resolve(spec, [f'--config.total_{unit}={value}'])
  assert type(config[f'total_{unit}']) is optim.DURATION_TYPES[unit]
  assert [u for u in optim.DURATION_UNITS if config[f'total_{u}'] is not None] == [unit]
  assert optim.steps_from(config, steps_per_epoch=10, batch_size=8) == steps


def test_two_units_on_the_command_line_are_an_error():
  with pytest.raises(ValueError, match='total_steps and total_epochs give one duration twice'):
    _resolve('multitask.py:runlocal', ['--config.total_steps=5', '--config.total_epochs=1'])


def test_main_reports_two_units_in_one_line_before_training(tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.main', '--config=configs/multitask.py:runlocal',
       f'--workdir={workdir}', '--config.total_examples=64', '--config.total_epochs=1'],
      cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().splitlines() == [
      'error: total_examples and total_epochs give one duration twice: set only one of them']
  assert not workdir.exists()


def test_override_of_another_unit_replaces_the_config_files_own():
  config = _resolve('multitask.py:runlocal', [])
  assert config.total_steps == 3
  configlib.override(config, {'total_epochs': 2, 'log_every_steps': 5})
  assert (config.total_steps, config.total_epochs, config.log_every_steps) == (None, 2.0, 5)
  with pytest.raises(ValueError, match='give one duration twice'):
    configlib.override(config, {'total_epochs': 2, 'total_examples': 64})


def test_set_duration_empties_the_other_units_and_keeps_them_typed():
  config = ml_collections.ConfigDict({'total_epochs': 210.0})
  configlib.set_duration(config, steps=40)
  assert (config.total_steps, config.total_epochs, config.total_examples) == (40, None, None)
  assert [config_path.get_type(f'total_{u}', config) for u in ('epochs', 'examples')] == [float, int]
  with pytest.raises(ValueError, match='takes one of steps, examples, epochs'):
    configlib.set_duration(config, steps=4, epochs=1.0)
