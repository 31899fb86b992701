"""Run directories (issue 17, kind 7): a re-run with another model is refused before anything is
written, naming what differs; the same model resumes; no config.json is lost."""

import json
import os
import subprocess
import sys

import pytest

from vitpose_jax import checkpoint, configlib, models, skeletons, train

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'multitask.py')
TWO_TASKS = {'coco': 'coco17', 'infant': 'infant_smil25'}


def _snapshot(directory):
  """Every file under ``directory`` with its bytes and modification time."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


def _model_json(directory, mcfg):
  mcfg.save(os.path.join(directory, 'model.json'))
  return _snapshot(directory)


def test_a_new_directory_has_nothing_to_compare(tmp_path):
  train.check_run_directory(str(tmp_path), models.model_config('nano', TWO_TASKS))


def test_a_removed_task_is_refused_in_one_line_and_nothing_is_touched(tmp_path):
  before = _model_json(tmp_path, models.model_config('nano', TWO_TASKS))
  with pytest.raises(train.TrainingError) as e:
    train.check_run_directory(str(tmp_path), models.model_config('nano', {'coco': 'coco17'}))
  assert str(e.value) == (f'{tmp_path}/model.json describes another model than this config '
                          '(num_experts 2 → 1; tasks.infant removed); resume with the same '
                          'model, or train this one in a new --workdir')
  assert _snapshot(tmp_path) == before


def test_a_changed_schema_is_refused_naming_the_field(tmp_path):
  _model_json(tmp_path, models.model_config('nano', TWO_TASKS))
  coco = skeletons.get('coco17').to_dict()
  coco['sigmas'] = [0.05] * 17
  changed = models.model_config('nano', {'coco': skeletons.schema_from_dict(coco),
                                         'infant': 'infant_smil25'})
  with pytest.raises(train.TrainingError, match=r'\(tasks\.coco\.schema\.sigmas \[0\.026, .* → '
                                                r'\[0\.05, .*\]\); resume'):
    train.check_run_directory(str(tmp_path), changed)


def test_several_changes_are_counted(tmp_path):
  _model_json(tmp_path, models.model_config('nano', TWO_TASKS))
  with pytest.raises(train.TrainingError, match=r'; and \d+ more\); resume'):
    train.check_run_directory(str(tmp_path), models.model_config('micro', {'coco': 'coco17'}))


def test_a_model_json_written_before_newer_fields_existed_is_the_same_model(tmp_path):
  mcfg = models.model_config('nano', TWO_TASKS)
  old = mcfg.to_dict()
  for field in ('attention', 'num_knowledge_tokens', 'knowledge_source_width', 'heatmap_size',
                'codec'):
    del old[field]
  for task in old['tasks'].values():
    del task['schema']['sigma_note'], task['schema']['source_names']
  (tmp_path / 'model.json').write_text(json.dumps(old))
  train.check_run_directory(str(tmp_path), mcfg)


def test_how_the_network_is_computed_may_change_on_resume(tmp_path):
  before = _model_json(tmp_path, models.model_config('nano', TWO_TASKS))
  changed = models.model_config('nano', TWO_TASKS, remat=True, attention='xla')
  train.check_run_directory(str(tmp_path), changed)
  train.write_run_description(str(tmp_path), configlib.parse_arg('', a=1), changed)
  assert _snapshot(tmp_path)['model.json'] == before['model.json']  # the run's own, kept


def test_an_unreadable_model_json_is_named_and_kept(tmp_path):
  (tmp_path / 'model.json').write_text('{"tasks": ')
  with pytest.raises(train.TrainingError, match=f'{tmp_path}/model.json: not valid JSON .*it is '
                                                'left as it is'):
    train.check_run_directory(str(tmp_path), models.model_config('nano', TWO_TASKS))
  assert (tmp_path / 'model.json').read_text() == '{"tasks": '


def test_a_changed_config_json_is_kept_beside_the_new_one(tmp_path, capsys):
  mcfg = models.model_config('nano', TWO_TASKS)
  workdir = str(tmp_path)
  train.write_run_description(workdir, configlib.parse_arg('', total_steps=3), mcfg)
  assert sorted(os.listdir(workdir)) == ['config.json', 'model.json']
  train.write_run_description(workdir, configlib.parse_arg('', total_steps=3), mcfg)
  assert sorted(os.listdir(workdir)) == ['config.json', 'model.json']
  train.write_run_description(workdir, configlib.parse_arg('', total_steps=5), mcfg)
  train.write_run_description(workdir, configlib.parse_arg('', total_steps=8), mcfg)
  steps = [json.loads((tmp_path / name).read_text())['total_steps']
           for name in ('config.1.json', 'config.2.json', 'config.json')]
  assert steps == [3, 5, 8]
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"{workdir}/config.json: the config differs from the last run's (total_steps 5 → 8); that "
      'one is kept as config.2.json')


def _config(**overrides):
  config = configlib.sibling_config(CONFIG, 'multitask').get_config(
      'runlocal,variant=nano,tasks=coco+infant')
  base = {'total_steps': 2, 'schedule.warmup_steps': 1, 'evals': {}, 'plots': 0,
          'checkpoint.best_metric': '', 'tasks.coco.train.num': 8, 'tasks.infant.train.num': 8}
  return configlib.override(config, {**base, **overrides})


@pytest.mark.slow
def test_a_run_refuses_another_model_before_writing_and_resumes_the_same_one(cache, tmp_path,
                                                                            capsys):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_config(), workdir)
  before = _snapshot(workdir)
  one_task = configlib.override(
      configlib.sibling_config(CONFIG, 'multitask').get_config('runlocal,variant=nano,tasks=coco'),
      {'total_steps': 3, 'evals': {}, 'plots': 0, 'tasks.coco.train.num': 8})
  with pytest.raises(train.TrainingError, match='tasks.infant removed'):
    train.train_and_evaluate(one_task, workdir)
  assert _snapshot(workdir) == before
  assert checkpoint.load_model(workdir)[1] == 2
  # The command line says the same in one line, exit status 2.
  done = subprocess.run(
      [sys.executable, '-m', 'vitpose_jax.main',
       f'--config={CONFIG}:runlocal,variant=nano,tasks=coco', f'--workdir={workdir}'],
      capture_output=True, text=True, env={**os.environ, 'VITPOSE_JAX_CACHE': cache})
  assert done.returncode == 2 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(
      f'error: {workdir}/model.json describes another model than this config (')
  assert _snapshot(workdir) == before
  # The same model resumes; its longer schedule is the new config.json, the old one is kept.
  assert train.train_and_evaluate(_config(total_steps=3), workdir)['step'] == 3
  assert 'resuming' in capsys.readouterr().out
  assert json.loads((tmp_path / 'run' / 'config.1.json').read_text())['total_steps'] == 2
  assert json.loads((tmp_path / 'run' / 'config.json').read_text())['total_steps'] == 3
  assert (tmp_path / 'run' / 'model.json').read_bytes() == before['model.json'][0]
