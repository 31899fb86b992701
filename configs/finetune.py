r"""Fine-tuning a trained model (a run or a converted checkpoint) to tasks and schemas of your own.

The network's geometry (width, depth, P, decoder, input size) comes from the source run; each task
of this config gets its own expert and head. A task whose name and schema the source has starts
from its expert and head; a new task starts from the expert (and decoder layers, all but the
keypoint layer) of the source task `from` names; everything else is fresh.

  python -m vitpose_jax.main --config=configs/finetune.py:tasks=infant+wheelchair,from=coco \
      --config.init_from=/tmp/vitpose_multitask --workdir=/tmp/vitpose_finetune

  # your own schema and COCO-format data:
  python -m vitpose_jax.main --config=configs/finetune.py:tasks=infant,train=experts+heads \
      --config.init_from=RUN --config.tasks.infant.schema=my_schema.json \
      --config.tasks.infant.train="{'source': 'coco', 'annotations': 'tr.json', 'images': 'i/'}" \
      --config.tasks.infant.val="{'source': 'coco', 'annotations': 'va.json', 'images': 'i/'}" \
      --workdir=/tmp/my_finetune

  # heads only on a frozen foundation backbone (an imported Sapiens or ViTPose run), with the
  # backbone's features computed once:
  python -m vitpose_jax.main \
      --config=configs/finetune.py:tasks=infant,train=heads,augment=none \
      --config.init_from=runs/sapiens_03b_256 --workdir=/tmp/sapiens_infant_heads

Arguments: `tasks=a+b` (names from configs/multitask.py's table; their synthetic populations are
the default data), `from=TASK` (the source task new tasks start from; empty: fresh experts),
`train=all|experts+heads|heads` (what trains: everything; each task's expert and head with the
shared backbone frozen; heads only), `augment=default|flip|none` (ViTPose's recipe, flips
only, or none), `steps=`, `epochs=` (instead of steps), `batch=`, `runlocal`.
The lr is a fifth of the from-scratch recipe's (full fine-tune) or half of it (frozen backbone),
with a short warm-up and a cosine decay. The heatmap target σ is the source model's
(`data.sigma = 0`; its model.json codec record), e.g. 6 for Sapiens at 256×192 heatmaps.

With `train=heads` the backbone runs in inference mode and passes no gradient. When moreover no
augmentation is on (`augment=none`), every epoch sees the same crops: the backbone's feature map
of each training instance is computed once before the first step and the steps run the heads
alone (`config.feature_cache`: 'auto' does this whenever it applies; 'on' refuses a run it
cannot apply to; 'off' never caches). The cache is in memory, replicated on every device,
N · rows · cols · width values per task (0.79 MB per instance for a 0.3B backbone at 256×192),
at most half of a device's memory (a larger one is not built), and is rebuilt on resume.
"""

import ml_collections

from vitpose_jax import configlib

# Steps of ViTPose's recipe (configs/multitask.py's default) left on: all, the flips, none.
AUGMENT = {
    'default': {},
    'flip': dict(half_body_prob=0.0, scale_factor=0.0, rotation_prob=0.0, jitter_prob=0.0),
    'none': dict(flip_prob=0.0, half_body_prob=0.0, scale_factor=0.0, rotation_prob=0.0,
                 jitter_prob=0.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = configlib.parse_arg(arg, tasks='infant+wheelchair', train='all', augment='default',
                            runlocal=False, steps=300, epochs=0.0, batch=0, **{'from': 'coco'})
  if arg.train not in ('all', 'experts+heads', 'heads'):
    raise ValueError(f'config argument train={arg.train!r}: use all, experts+heads or heads')
  if arg.augment not in AUGMENT:
    raise ValueError(f'config argument augment={arg.augment!r}: use {", ".join(AUGMENT)}')
  parts = ([f'tasks={arg.tasks}', f'batch={arg.batch}', 'scratch']
           + (['runlocal'] if arg.runlocal else []))
  config = configlib.sibling_config(__file__, 'multitask').get_config(','.join(parts))
  config.model.variant = 'init_from'
  config.init_from = ''
  config.expert_from = {name: arg['from'] for name in config.tasks} if arg['from'] else {}
  config.trainable = arg.train
  config.data.augment.update(AUGMENT[arg.augment])
  config.data.sigma = 0.0
  config.feature_cache = 'auto'
  config.optimizer.lr = 1e-3 / (5 if arg.train == 'all' else 2)
  config.schedule.kind = 'cosine'
  if not arg.runlocal:
    # 20 steps, or a fifth of a shorter run.
    config.schedule.warmup_steps = 20 if arg.epochs else min(20, max(1, arg.steps // 5))
    if arg.epochs:
      configlib.set_duration(config, epochs=arg.epochs)
    else:
      configlib.set_duration(config, steps=arg.steps)
  return config
