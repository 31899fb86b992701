r"""Adapting a trained model to a population: without its labels (SHIFT-style mean teacher), or
with few of them (FiDIP-style adversarial alignment, a cross-schema teacher).

**Without target labels** (`method=meanteacher|source`). The source model (default: the shipped
`zoo:micro-adult`) keeps its one `coco` head (coco17) and keeps learning its labelled source data
(synthetic adults, plain style; with `source=adult+infant` also synthetic infants labelled in
coco17 in the plain style, as SyRIP's synthetic part), while the `target` stream feeds the same
head unlabeled target images: synthetic infants drawn in the `shifted` style (other lighting,
camera, textures, sensor noise and blur), their labels withheld (`labels=False`,
`model_task='coco'`). The target's validation data keeps its labels, for evaluation only: the run
evaluates once, at the end, and picks nothing by it.

  # mean teacher (EMA teacher on weak views → student on strong views, confident joints only)
  python -m vitpose_jax.main --config=configs/adapt.py:method=meanteacher --workdir=/tmp/mt
  # + the pose prior on the student's soft-argmax keypoints, + silhouette consistency
  python -m vitpose_jax.main --config=configs/adapt.py:method=meanteacher,prior,silhouette \
      --workdir=/tmp/shift
  # the baseline: fine-tune on the source alone with the same strong augmentation
  python -m vitpose_jax.main --config=configs/adapt.py:method=source --workdir=/tmp/src
  # a smoke run (about a minute: tiny data, 3 steps)
  python -m vitpose_jax.main --config=configs/adapt.py:method=meanteacher,runlocal --workdir=/tmp/s

**With a few target labels** (`method=finetune|adversarial|crossschema`; `labels=0.1`: the
labelled fraction of the target's training images). The model gets one head, `target`, in the
target schema (`schema=infant_smil25`, the default, or `coco17`), initialised from the shipped
model's coco expert and decoder with the keypoint channels of the joints both schemas name. Its
streams: `target` (shifted-style infants, `subset=(0, labels)`, labelled) and, where the method
uses them, `unlabeled` (the same images' other part, `subset=(labels, 1)`, `labels=False`) and
`synthetic` (plain-style infants, labelled: FiDIP's synthetic set). Each stream trains the
`target` head (`model_task='target'`).

  # plain fine-tune on the labelled 10%; `,synthetic` mixes in synthetic images at `mix=`
  python -m vitpose_jax.main --config=configs/adapt.py:method=finetune --workdir=/tmp/ft
  # FiDIP: + synthetic mixing (mix=0.5 of the labelled batch) + a domain classifier on pooled
  # backbone tokens behind gradient reversal, synthetic against target images
  python -m vitpose_jax.main --config=configs/adapt.py:method=adversarial --workdir=/tmp/adv
  # the shipped coco17 model teaches the 13 keypoints coco17 shares with infant_smil25, on the
  # labelled and unlabeled target images; the other 12 learn from the labels alone
  python -m vitpose_jax.main --config=configs/adapt.py:method=crossschema --workdir=/tmp/xs

The adversarial domains are config: `config.adapt.domains` maps each of two names to the task
streams of that domain (labels 0 and 1 in name order; the classifier's loss is symmetric in
them). Adult against infant, as the survey frames it, is e.g.
`method=adversarial,schema=coco17 --config.tasks.synthetic.train="{'source': 'synthetic',
'population': 'adult', 'num': 8000}" --config.adapt.domains="{'adult': ('synthetic',),
'infant': ('target', 'unlabeled')}"`.

Your own target: `--config.tasks.target.train="{'source': 'coco', 'annotations': A, 'images':
DIR, 'labels': False}"` (keypoints in A are ignored; person boxes and `segmentation` masks are
read), or `{'source': 'detections', 'detections': D, 'images': DIR}` for an image folder with a
person detector's boxes; `--config.tasks.target.val=` labelled data of the target (with
`method=source`, which has no target stream: `--config.evals.target.data=`), and
`--config.adapt.prior.poses=` a COCO file of target-schema poses for the prior. With few labels:
`tasks.target.train` with `'subset': (0, 0.1)` and `tasks.unlabeled.train` the same file with
`'subset': (0.1, 1), 'labels': False`.

Arguments: `method=meanteacher|source|finetune|adversarial|crossschema`, `prior`, `silhouette`,
`source=adult|adult+infant` (the labelled source data of meanteacher and source), `weak`
(method=source: the teacher's weak augmentation on the source instead of the strong one),
`schema=infant_smil25|coco17`, `labels=0.1`, `synthetic` and `mix=0.5` (the synthetic share of
the labelled batch; adversarial always mixes), `batch=` (samples per stream and step; default 32,
2 with runlocal), `steps=` (default 300, 3 with runlocal), `seed=`, `init=RUN` (the starting
model), `runlocal`.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict

from vitpose_jax import configlib
from vitpose_jax.data.transforms import AugmentConfig

SOURCE_MODEL = 'zoo:micro-adult'
TARGET_POPULATION, TARGET_STYLE = 'infant_coco', 'shifted'
# The teacher's view: a mirror at most, so its pseudo-labels are as good as the model gets.
WEAK = dict(half_body_prob=0.0, scale_factor=0.0, rotation_prob=0.0, jitter_prob=0.0)
# The student's view (and the source task's augmentation in every arm, so that the arms differ
# only in the target terms): ViTPose's geometric recipe, a little milder, plus photometric noise.
STRONG = dict(scale_factor=0.3, rotation_factor=30.0, rotation_prob=0.6, jitter_prob=0.3,
              brightness=0.4, contrast=0.4, saturation=0.4, blur=1.5, noise=8.0)
METHODS = ('meanteacher', 'source', 'finetune', 'adversarial', 'crossschema')
FEW_LABELS = ('finetune', 'adversarial', 'crossschema')
SOURCES = ('adult', 'adult+infant')
# The few-label methods' target schema → the synthetic infants labelled in it.
POPULATIONS = {'infant_smil25': 'infant', 'coco17': 'infant_coco'}
# The few-label recipe is the main command's, which adapts this model to infants (val AP 0.33
# after 300 steps x 32: configs/multitask.py): lr 1e-3, flip as the only augmentation.
FEW_LABEL_LR = 1e-3
FLIP_ONLY = dict(half_body_prob=0.0, scale_factor=0.0, rotation_prob=0.0, jitter_prob=0.0)


def _data(population: str, num: int, seed: int, **extra) -> dict:
  return dict(source='synthetic', population=population, num=num, seed=seed, **extra)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = configlib.parse_arg(arg, method='meanteacher', prior=False, silhouette=False,
                            source='adult', weak=False, schema='infant_smil25', labels=0.1,
                            synthetic=False, mix=0.5, batch=0, runlocal=False, steps=0, seed=0,
                            init=SOURCE_MODEL)
  if arg.steps < 0:
    raise ValueError(f'config argument steps={arg.steps}: use a positive number of steps')
  if arg.method not in METHODS:
    raise ValueError(f'config argument method={arg.method!r}: use {" or ".join(METHODS)}')
  if arg.method in FEW_LABELS:
    return _few_labels(arg)
  if arg.synthetic or arg.schema != 'infant_smil25' or arg.labels != 0.1 or arg.mix != 0.5:
    raise ValueError('config arguments schema, labels, synthetic and mix are for '
                     f'method={"|".join(FEW_LABELS)}')
  if arg.source not in SOURCES:
    raise ValueError(f'config argument source={arg.source!r}: use {" or ".join(SOURCES)}')
  if arg.method == 'source' and (arg.prior or arg.silhouette):
    raise ValueError('config arguments prior and silhouette need method=meanteacher')
  if arg.weak and arg.method != 'source':
    raise ValueError('config argument weak is for method=source (the mean teacher\'s student '
                     'always sees the strong view)')
  config = configlib.sibling_config(__file__, 'multitask').get_config(
      'tasks=coco,scratch' + (',runlocal' if arg.runlocal else ''))
  n_source, n_target, n_val, n_poses = ((48, 48, 8, 48) if arg.runlocal else
                                        (8000, 2000, 200, 2000))
  batch = arg.batch or (2 if arg.runlocal else 32)
  config.seed = arg.seed
  config.model.variant = 'init_from'
  config.init_from = arg.init
  # Labelled source data: the shipped model's own pretraining set.
  config.tasks.coco.train = _data('adult', n_source, 0)
  config.tasks.coco.batch_size = batch
  target_val = _data(TARGET_POPULATION, n_val, 0, style=TARGET_STYLE)
  if arg.source == 'adult+infant':
    config.tasks.infant_plain = dict(
        schema='coco17', model_task='coco', train=_data(TARGET_POPULATION, n_target, 0),
        val=_data(TARGET_POPULATION, n_val, 0), batch_size=batch, loss_weight=1.0)
  if arg.method == 'meanteacher':
    # Seed 2: other infants than the labelled plain-style ones (seed 0) and the prior's (1).
    config.tasks.target = dict(
        schema='coco17', model_task='coco',
        train=_data(TARGET_POPULATION, n_target, 2, style=TARGET_STYLE, labels=False),
        val=target_val, batch_size=batch, loss_weight=1.0)
  config.epoch_task = 'coco'
  config.data.augment.update(WEAK if arg.weak else STRONG)
  config.adapt = dict(
      method='meanteacher' if arg.method == 'meanteacher' else '',
      target='target',
      ema_decay=0.99,
      # The teacher's heatmap peak from which a joint is pseudo-labelled (targets peak at 1).
      confidence=0.4,
      consistency_weight=1.0,
      soft_argmax_beta=20.0,
      weak_augment=dataclasses.asdict(AugmentConfig(**WEAK)),
      strong_augment=dataclasses.asdict(AugmentConfig(**STRONG)),
      # A Gaussian mixture over normalised target poses (vitpose_jax.adapt.prior), fitted when
      # the run starts. Seed 1: the prior's poses are not the target training images' labels.
      # The target's camera: the image-plane poses of the shifted style's tilted camera differ
      # from the plain style's (fitted on plain-style poses, prior + silhouette fell from val
      # PCK@0.2 0.62 to 0.49 in a 150-step run).
      # quantile: poses less plausible than this fraction of the prior's own are penalised.
      # weight: on val (150 steps, source=adult+infant) every weight tried lowered PCK@0.2 from
      # the mean teacher's 0.620: 1e-4 0.482, 1e-5 0.586; the smaller is kept.
      prior=dict(weight=1e-5 if arg.prior else 0.0, components=2 if arg.runlocal else 8,
                 quantile=0.9,
                 poses=_data(TARGET_POPULATION, n_poses, 1, style=TARGET_STYLE) if arg.prior
                 else config_dict.placeholder(ml_collections.ConfigDict)),
      # On val (150 steps, as above) 0.01 left PCK@0.2 as it was (0.623 against 0.620).
      silhouette_weight=0.01 if arg.silhouette else 0.0,
  )
  # One evaluation, of the target, at the end: no checkpoint is picked with target labels.
  # The mean teacher's target stream evaluates the coco head on tasks.target.val (so an override
  # of it moves the evaluation); without a target stream, the target's data is given here.
  config.evals = {'target': dict(
      type='keypoints', task='target' if arg.method == 'meanteacher' else 'coco',
      data=(config_dict.placeholder(ml_collections.ConfigDict) if arg.method == 'meanteacher'
            else target_val), batch_size=batch)}
  return _schedule(config, arg, lr=2e-4)


def _few_labels(arg) -> ml_collections.ConfigDict:
  """method=finetune|adversarial|crossschema: a `target` head in ``arg.schema`` (module
  docstring)."""
  if arg.prior or arg.silhouette or arg.weak or arg.source != 'adult':
    raise ValueError('config arguments prior, silhouette, weak and source are for '
                     'method=meanteacher|source')
  if arg.schema not in POPULATIONS:
    raise ValueError(f'config argument schema={arg.schema!r}: use '
                     f'{" or ".join(POPULATIONS)}')
  if not 0.0 < arg.labels < 1.0:
    raise ValueError(f'config argument labels={arg.labels}: the labelled fraction of the '
                     'target images, between 0 and 1')
  if arg.synthetic and arg.method != 'finetune':
    raise ValueError('config argument synthetic is for method=finetune (adversarial always '
                     'mixes synthetic images in; crossschema has none)')
  mixes = arg.method == 'adversarial' or arg.synthetic
  if not mixes and arg.mix != 0.5:
    raise ValueError('config argument mix is for method=adversarial and '
                     'method=finetune,synthetic (the arms that mix synthetic images in)')
  if mixes and not 0.0 < arg.mix < 1.0:
    raise ValueError(f'config argument mix={arg.mix}: the synthetic share of the labelled '
                     'batch, between 0 and 1')
  if arg.method == 'crossschema' and arg.schema == 'coco17':
    raise ValueError('method=crossschema needs a target schema other than the teacher\'s '
                     '(coco17): use schema=infant_smil25')
  config = configlib.sibling_config(__file__, 'multitask').get_config(
      'tasks=coco,scratch' + (',runlocal' if arg.runlocal else ''))
  n_target, n_val = (48, 8) if arg.runlocal else (2000, 200)
  batch = arg.batch or (2 if arg.runlocal else 32)
  population = POPULATIONS[arg.schema]
  n_synthetic = max(1, round(arg.mix * batch)) if mixes else 0
  if mixes and n_synthetic >= batch:
    raise ValueError(f'config arguments batch={batch}, mix={arg.mix}: no target samples would '
                     'be left in the labelled batch')
  config.seed = arg.seed
  config.model.variant = 'init_from'
  config.init_from = arg.init
  config.expert_from = {'target': 'coco'}
  config.init_shared_keypoints = True
  # Seed 2: the shifted-style images of configs/adapt.py's unlabeled target, now partly labelled.
  images = _data(population, n_target, 2, style=TARGET_STYLE)
  task = dict(schema=arg.schema, loss_weight=1.0)
  config.tasks = {'target': dict(
      task, train=dict(images, subset=(0.0, arg.labels)), batch_size=batch - n_synthetic,
      val=_data(population, n_val, 0, style=TARGET_STYLE))}
  if mixes:
    config.tasks.synthetic = dict(task, model_task='target', train=_data(population, n_target, 0),
                                  val=_data(population, n_val, 0), batch_size=n_synthetic)
  if arg.method in ('adversarial', 'crossschema'):
    config.tasks.unlabeled = dict(
        task, model_task='target',
        train=dict(images, subset=(arg.labels, 1.0), labels=False),
        val=_data(population, n_val, 0, style=TARGET_STYLE), batch_size=batch)
  config.epoch_task = 'target'
  config.data.augment.update(FLIP_ONLY)
  config.adapt = dict(
      method='' if arg.method == 'finetune' else arg.method,
      target='target',
      # adversarial (DANN's ramp: lambda = max_lambda * (2 / (1 + exp(-gamma p)) - 1)). The
      # domain loss (binary cross-entropy, ~0.69 at chance) is ~100x the heatmap loss. On val
      # (seed 0, 300 steps x 16, 10% labels; + synthetic mixing alone: AP 0.258), weight 0.01
      # gave AP 0.152 (the backbone won the game: classifier accuracy 0.02-0.15, below chance),
      # 0.003 0.220, 0.001 0.248 (accuracy ~0.9): the smallest is kept.
      domains={'synthetic': ('synthetic',), 'target': ('target', 'unlabeled')},
      domain_weight=0.001, max_lambda=1.0, lambda_gamma=10.0, domain_hidden=256, domain_lr=1e-3,
      # crossschema: the shipped coco17 model's coco head teaches the shared keypoints where its
      # heatmap peaks at teacher_confidence or more. On val (as above; fine-tune alone: AP
      # 0.230), weight 1 without a threshold gave 0.073, with 0.4 0.129, weight 0.1 with 0.4
      # 0.215: this teacher (AP ~0 on coco17 infants) knows less of the target than its labels
      # teach, and the smallest weight tried is kept.
      teacher=SOURCE_MODEL, teacher_task='coco', distill_weight=0.1, teacher_confidence=0.4,
  )
  config.evals = {'target': dict(type='keypoints', task='target',
                                 data=config_dict.placeholder(ml_collections.ConfigDict),
                                 batch_size=batch)}
  return _schedule(config, arg, lr=FEW_LABEL_LR)


def _schedule(config: ml_collections.ConfigDict, arg, *, lr: float) -> ml_collections.ConfigDict:
  """What every method shares: ``arg.steps`` steps (default 300, 3 with runlocal) at ``lr`` with
  a cosine decay after a warm-up (20 steps; runlocal's own for its 3), one evaluation at the end
  that picks no checkpoint."""
  config.eval_every_steps = 0
  config.checkpoint.best_metric = ''
  config.optimizer.lr = lr
  config.schedule.kind = 'cosine'
  if not arg.runlocal:
    config.schedule.warmup_steps = 20
  if arg.steps or not arg.runlocal:
    steps = arg.steps or 300
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 5)
    configlib.set_duration(config, steps=steps)
  config.plots = 0 if arg.runlocal else 4
  return config
