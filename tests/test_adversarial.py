"""Adaptation with few target labels: gradient reversal and the domain classifier
(vitpose_jax.adapt.adversarial), the shared-joint teacher (vitpose_jax.adapt.crossschema), their
train steps, checkpoints and configs/adapt.py's few-label methods."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitpose_jax import checkpoint, configlib, models, skeletons, train
from vitpose_jax.adapt import adversarial, crossschema
from vitpose_jax.data.coco import DataError

from conftest import SMALL_IMAGE, tiny_config

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'adapt.py')


def _adapt_config(arg, **overrides):
  return configlib.override(configlib.sibling_config(CONFIG, 'adapt').get_config(arg), overrides)


@pytest.mark.parametrize('scale', [0.0, 0.3, 2.0])
def test_gradient_reversal_keeps_the_forward_pass_and_flips_the_gradient_scaled(scale):
  x = jnp.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]])
  weights = jnp.array([[2.0, -1.0, 4.0], [0.5, 3.0, -2.0]])
  np.testing.assert_array_equal(adversarial.gradient_reversal(x, scale), x)
  # d/dx sum(w · x) is w; reversed, −scale · w. The scale gets no gradient.
  grad_x, grad_scale = jax.grad(
      lambda x, s: jnp.sum(weights * adversarial.gradient_reversal(x, s)), argnums=(0, 1))(
          x, jnp.float32(scale))
  np.testing.assert_allclose(grad_x, -scale * weights, rtol=1e-6)
  assert grad_scale == 0.0
  # Under jit, with the scale traced (the step's λ ramp).
  jitted = jax.jit(jax.grad(lambda x, s: jnp.sum(weights * adversarial.gradient_reversal(x, s))))
  np.testing.assert_allclose(jitted(x, jnp.float32(scale)), -scale * weights, rtol=1e-6)


def test_the_lambda_ramp_is_danns():
  ramp = [float(adversarial.lambda_ramp(p, max_lambda=0.5, gamma=10.0))
          for p in (-1.0, 0.0, 0.1, 0.5, 1.0, 2.0)]
  expected = [0.0, 0.0, 0.5 * (2 / (1 + np.exp(-1.0)) - 1), 0.5 * (2 / (1 + np.exp(-5.0)) - 1),
              0.5 * np.tanh(5.0), 0.5 * np.tanh(5.0)]
  np.testing.assert_allclose(ramp, expected, rtol=1e-6)
  term = adversarial.Adversarial(domains=(('a', ('x',)), ('b', ('y',))), weight=1.0,
                                 total_steps=200)
  np.testing.assert_allclose(float(term.scale(jnp.int32(20))), np.tanh(0.5), rtol=1e-6)


def test_the_domain_loss_weighs_each_domain_equally_whatever_the_mix():
  # Chance logits: ln 2 whatever the counts; a confident right answer on one domain halves it.
  loss, accuracy = adversarial.domain_loss(jnp.zeros(3), jnp.zeros(9))
  np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
  loss, accuracy = adversarial.domain_loss(jnp.full(1, -30.0), jnp.zeros(9))
  np.testing.assert_allclose(loss, 0.5 * np.log(2.0), rtol=1e-5)
  assert float(accuracy) == 0.5
  _, accuracy = adversarial.domain_loss(jnp.array([-1.0, 2.0]), jnp.array([1.0, 1.0, 1.0, -1.0]))
  np.testing.assert_allclose(accuracy, 0.5 * (0.5 + 0.75))


@pytest.mark.slow
def test_the_classifier_learns_the_domains_of_a_frozen_backbone():
  model = models.create_model(tiny_config({'coco': 'coco17'}), seed=0)
  rng = np.random.default_rng(0)
  h, w = SMALL_IMAGE
  # Two domains a frozen random backbone can tell apart only through its features: dim, cool
  # images against bright, warm ones, each with its own noise.
  dim = rng.integers(0, 120, (16, h, w, 3)).astype(np.uint8)
  dim[..., 2] += 60
  bright = rng.integers(100, 220, (16, h, w, 3)).astype(np.uint8)
  bright[..., 0] += 30
  features = {}
  for name, images in (('dim', dim), ('bright', bright)):
    _, aux = model({'coco': jnp.asarray(images)})
    features[name] = adversarial.pooled_tokens(aux['coco']['patch_tokens'])
  term = adversarial.Adversarial(domains=(('dim', ('dim',)), ('bright', ('bright',))),
                                 weight=1.0, learning_rate=1e-2, total_steps=1)
  classifier = term.classifier(model.config.width, seed=0)
  graphdef, params = nnx.split(classifier, nnx.Param)
  tx = term.optimizer()
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(params):
      return term.losses(nnx.merge(graphdef, params), features, jnp.int32(1))
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, terms

  losses = []
  for _ in range(60):
    params, opt_state, loss, terms = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.2 * losses[0], losses[::10]
  assert float(terms['domain_accuracy']) == 1.0
  assert float(terms['domain_lambda']) == pytest.approx(np.tanh(5.0), rel=1e-5)


def test_the_shared_joints_of_coco17_and_infant_smil25():
  coco, infant = skeletons.get('coco17'), skeletons.get('infant_smil25')
  teacher_index, student_index = crossschema.shared_channels(coco, infant)
  assert len(teacher_index) == 13
  assert [coco.keypoints[i] for i in teacher_index] == [infant.keypoints[j] for j in student_index]
  assert 'nose' in [coco.keypoints[i] for i in teacher_index]
  assert 'left_eye' not in [infant.keypoints[j] for j in student_index]
  with pytest.raises(crossschema.CrossSchemaError, match='share no keypoint'):
    crossschema.shared_channels(coco, skeletons.make_schema('dots', ['a', 'b'], [0.05, 0.05]))


def test_the_cross_schema_term_touches_exactly_the_shared_channels():
  coco, infant = skeletons.get('coco17'), skeletons.get('infant_smil25')
  teacher_index, student_index = crossschema.shared_channels(coco, infant)
  rng = np.random.default_rng(0)
  student = jnp.asarray(rng.uniform(0, 1, (2, 8, 6, 25)), jnp.float32)
  teacher = jnp.asarray(rng.uniform(0, 1, (2, 8, 6, 17)), jnp.float32)

  def loss(student, teacher, threshold=0.0):
    return crossschema.shared_joint_loss(student, teacher, teacher_index, student_index,
                                         threshold=threshold)[0]

  grad_student, grad_teacher = jax.grad(loss, argnums=(0, 1))(student, teacher)
  touched = np.flatnonzero(np.abs(np.asarray(grad_student)).sum(axis=(0, 1, 2)))
  assert touched.tolist() == sorted(student_index)
  assert not np.any(grad_teacher)
  # The value: the mean over samples, pixels and the 13 pairs of the squared differences.
  difference = (np.asarray(student)[..., list(student_index)]
                - np.asarray(teacher)[..., list(teacher_index)])
  np.testing.assert_allclose(loss(student, teacher), np.mean(difference ** 2), rtol=1e-6)
  # An unsure teacher teaches nothing: a joint whose heatmap peaks below the threshold drops out
  # of that sample's term (it still counts in the mean, as a zero-weight joint does).
  teacher = teacher.at[0, ..., teacher_index[0]].multiply(0.2)
  kept = np.ones((2, 13))
  kept[0, 0] = 0.0
  np.testing.assert_allclose(loss(student, teacher, 0.5),
                             np.mean(difference ** 2 * kept[:, None, None, :]), rtol=1e-5)
  _, confident = crossschema.shared_joint_loss(student, teacher, teacher_index, student_index,
                                               threshold=0.5)
  np.testing.assert_allclose(confident, 25 / 26)
  grad_student = jax.grad(loss)(student, teacher, 0.5)
  assert not np.any(grad_student[0, ..., student_index[0]])


def _batch(streams, n=2, keypoints=17):
  h, w = SMALL_IMAGE
  rng = np.random.default_rng(0)
  return {t: {'image': rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
              'keypoints': rng.uniform(0, 40, (n, keypoints, 2)).astype(np.float32),
              'keypoint_weights': np.ones((n, keypoints), np.float32)} for t in streams}


def _adversarial_step(config):
  mcfg = tiny_config({'target': 'coco17'})
  model = models.create_model(mcfg, seed=0)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  replicated = NamedSharding(Mesh(np.array(jax.devices()[:1]), ('data',)), P())
  tx, schedule = train.optimizer_and_schedule(config, mcfg, params, total_steps=10,
                                              steps_per_epoch=5)
  term = train._adaptation(config, mcfg, total_steps=10)
  classifier = nnx.state(term.classifier(mcfg.width, config.seed), nnx.Param)
  state = train.init_state(params, batch_stats, tx, 0, domain=(classifier, term.optimizer()))
  step = train.make_train_step(config, mcfg, graphdef, tx, schedule, sharding=replicated,
                               adaptation=term, labelled=train.labelled_tasks(config))
  return mcfg, graphdef, state, step


def test_the_adversarial_step_trains_the_classifier_and_reverses_its_gradient(cache, tmp_path):
  config = _adapt_config('method=adversarial,schema=coco17,runlocal')
  mcfg, graphdef, state, step = _adversarial_step(config)
  batch = _batch(config.tasks)
  new, metrics = step(jax.tree.map(jnp.copy, state), batch, None)
  assert {'train/domain', 'train/domain_accuracy', 'train/domain_lambda', 'train/target_loss',
          'train/synthetic_loss'} <= set(metrics)
  assert 'train/unlabeled_loss' not in metrics
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state['domain']['params']),
                                                      jax.tree.leaves(new['domain']['params']))]
  assert all(changed)
  # The loss: each labelled stream's heatmap loss, plus the weighted domain term.
  assert float(metrics['train/loss']) == pytest.approx(
      float(metrics['train/target_loss']) + float(metrics['train/synthetic_loss'])
      + config.adapt.domain_weight * float(metrics['train/domain']), rel=1e-5)
  # The step saves and restores the classifier with the rest of the state.
  with checkpoint.TrainCheckpoints(str(tmp_path), graphdef, keep=1) as ckpt:
    ckpt.save(1, new, {'x': 1})
    ckpt.wait()
    restored, _ = ckpt.restore(1, state)
  for a, b in zip(jax.tree.leaves(restored['domain']), jax.tree.leaves(new['domain'])):
    np.testing.assert_array_equal(a, b)
  # A checkpoint of a run without the classifier is refused in one line, not half restored.
  with checkpoint.TrainCheckpoints(str(tmp_path / 'plain'), graphdef, keep=1) as ckpt:
    ckpt.save(1, {k: v for k, v in new.items() if k != 'domain'}, {'x': 1})
    ckpt.wait()
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"has no 'domain' item: a run without config.adapt.method="
                       r'adversarial wrote it'):
      ckpt.check_resumable(1, state)


@pytest.mark.slow
def test_the_reversed_gradient_reaches_the_backbone_scaled_by_lambda():
  model = models.create_model(tiny_config({'coco': 'coco17'}), seed=0)
  rng = np.random.default_rng(1)
  h, w = SMALL_IMAGE
  images = {'a': rng.integers(0, 255, (2, h, w, 3), dtype=np.uint8),
            'b': rng.integers(0, 255, (2, h, w, 3), dtype=np.uint8)}
  term = adversarial.Adversarial(domains=(('a', ('a',)), ('b', ('b',))), weight=1.0,
                                 total_steps=10)
  classifier = term.classifier(model.config.width, seed=0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, sign):
    net = nnx.merge(graphdef, params, rest)
    features = {}
    for name, x in images.items():
      _, aux = net({'coco': jnp.asarray(x)})
      features[name] = adversarial.pooled_tokens(aux['coco']['patch_tokens'])
    if sign:  # the plain classifier loss, no reversal
      logits = [classifier(jnp.concatenate([features[s] for s in streams]))
                for _, streams in term.domains]
      return adversarial.domain_loss(*logits)[0]
    return term.losses(classifier, features, jnp.int32(5))[0]

  plain = jax.grad(loss)(params, True)
  reversed_ = jax.grad(loss)(params, False)
  scale = float(term.scale(jnp.int32(5)))
  for a, b in zip(jax.tree.leaves(reversed_['backbone']), jax.tree.leaves(plain['backbone'])):
    np.testing.assert_allclose(a, -scale * np.asarray(b), rtol=1e-4, atol=1e-7)


def test_bad_adversarial_and_cross_schema_configs_are_refused():
  mcfg = tiny_config({'target': 'coco17'})
  config = _adapt_config('method=adversarial,schema=coco17,runlocal')
  with config.unlocked():
    config.adapt.domains = {'synthetic': ('synthetic',)}
  with pytest.raises(train.TrainingError, match='must name two domains'):
    train._adaptation(config, mcfg)
  with config.unlocked():
    config.adapt.domains = {'a': ('synthetic', 'nope'), 'b': ('target', 'unlabeled')}
  with pytest.raises(train.TrainingError, match=r"domains.a .*\['nope'\] are not tasks"):
    train._adaptation(config, mcfg)
  with config.unlocked():
    config.adapt.domains = {'a': 'synthetic', 'b': ('target', 'unlabeled')}
  with pytest.raises(train.TrainingError, match=r"domains.a 'synthetic' is a string: give a list"):
    train._adaptation(config, mcfg)
  with config.unlocked():
    config.tasks.target.train.subset = (0.5, 0.2)
  with pytest.raises(DataError, match=r'^tasks.target.train: synthetic data spec: subset '):
    train.labelled_tasks(config)
  with config.unlocked():
    config.tasks.target.train.subset = (0.0, 0.1)
    config.adapt.domains = {'a': ('synthetic',), 'b': ('target',)}
  # The unlabeled stream would train nothing.
  with pytest.raises(train.TrainingError, match=r"tasks \['unlabeled'\] have labels=False"):
    train._adaptation(config, mcfg)
  config = _adapt_config('method=crossschema,runlocal')
  student = tiny_config({'target': 'infant_smil25'})
  with config.unlocked():
    config.adapt.teacher_task = 'wholebody_x'
  with pytest.raises(train.TrainingError, match="teacher_task 'wholebody_x' is not a task"):
    train._adaptation(config, student)
  with config.unlocked():
    config.adapt.teacher_task = 'coco'
  # The shipped teacher reads 128x96 crops; the tiny student's are smaller.
  with pytest.raises(train.TrainingError, match=r'input size \(128, 96\) != the student'):
    train._adaptation(config, student)
  for arg, message in (('method=crossschema,schema=coco17', 'other than the teacher'),
                       ('method=finetune,prior', 'for method=meanteacher|source'),
                       ('method=meanteacher,labels=0.2', 'for method=finetune'),
                       ('method=adversarial,mix=1.0', 'mix=1.0'),
                       ('method=finetune,mix=0.3', 'mix is for method=adversarial'),
                       ('method=finetune,labels=1.0', 'labels=1.0'),
                       ('method=crossschema,synthetic', 'synthetic is for method=finetune')):
    with pytest.raises(ValueError, match=message):
      _adapt_config(arg)


def test_the_few_label_streams_split_the_target_images():
  config = _adapt_config('method=adversarial,labels=0.2,batch=8')
  tasks = config.tasks
  assert tasks.target.train.subset == (0.0, 0.2) and tasks.target.train.get('labels', True)
  assert tasks.unlabeled.train.subset == (0.2, 1.0) and not tasks.unlabeled.train.labels
  assert {k: v for k, v in tasks.target.train.items() if k != 'subset'} == {
      k: v for k, v in tasks.unlabeled.train.items() if k not in ('subset', 'labels')}
  assert tasks.target.train.style == 'shifted' and tasks.synthetic.train.get('style') is None
  # mix=0.5 of the labelled batch is synthetic; the unlabeled stream has a batch of its own.
  assert (tasks.target.batch_size, tasks.synthetic.batch_size, tasks.unlabeled.batch_size) == (
      4, 4, 8)
  assert train.model_task(config, 'synthetic') == train.model_task(config, 'unlabeled') == 'target'
  assert config.expert_from.to_dict() == {'target': 'coco'}


@pytest.mark.slow
@pytest.mark.parametrize('method', ['adversarial', 'crossschema'])
def test_adapt_few_label_methods_run_end_to_end(cache, tmp_path, method):
  config = _adapt_config(f'method={method},runlocal')
  metrics = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert metrics['step'] == 3 and 'target/AP' in metrics
  rows = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
  terms = ({'train/domain', 'train/domain_accuracy', 'train/synthetic_loss'}
           if method == 'adversarial' else
           {'train/target_shared_loss', 'train/unlabeled_shared_loss',
            'train/target_shared_confident'})
  assert terms | {'train/target_loss'} <= set(rows[-1])
  assert all(np.isfinite(rows[-1][k]) for k in rows[-1])
