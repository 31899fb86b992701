r"""One task, one dense ViTPose (no experts): the classic single-dataset recipe.

  python -m vitpose_jax.main --config=configs/single_task.py:task=infant --workdir=/tmp/infant
  python -m vitpose_jax.main --config=configs/single_task.py:task=coco,runlocal --workdir=/tmp/s

Tasks: coco, wholebody, infant, wheelchair (synthetic data by default; point
`--config.tasks.<task>.train` / `.val` at COCO-format files for real data). Everything else is
configs/multitask.py's recipe with the single-task layer decay of the variant.
"""

import ml_collections

from vitpose_jax import configlib
from vitpose_jax.models import VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = configlib.parse_arg(arg, task='coco', variant='micro', runlocal=False, batch=0)
  parts = [f'tasks={arg.task}', f'variant={arg.variant}', f'batch={arg.batch}', 'scratch']
  if arg.runlocal:
    parts.append('runlocal')
  config = configlib.sibling_config(__file__, 'multitask').get_config(','.join(parts))
  config.model.expert_dim = 0
  config.optimizer.layer_decay = VARIANTS[arg.variant].layer_decay
  return config
