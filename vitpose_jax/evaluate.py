"""python -m vitpose_jax.evaluate: score a run, or any COCO results file, as one JSON object.

    python -m vitpose_jax.evaluate --gt person_keypoints_val.json --results dt.json --schema coco17
    python -m vitpose_jax.evaluate --workdir RUN --task coco \\
        --annotations val.json --images val/ [--detections person_dets.json]
    python -m vitpose_jax.evaluate --workdir RUN --task infant --synthetic infant --num 200
    python -m vitpose_jax.evaluate --workdir RUN        # the evals of RUN/config.json

Ground-truth boxes by default; ``--detections`` evaluates on detector boxes with OKS-NMS and
rescoring as the official COCO numbers do. The box source is part of the output. Schemas with
parts (COCO-WholeBody) are scored per part too.

Image and annotation ids may be any JSON scalar; a results file names images by the ground
truth's own ids. The output holds the counts behind the numbers: GT instances scored, GT areas
estimated, results not scored for non-finite values, and for a run the instances its loader or
the detections file skipped (:mod:`vitpose_jax.evaluation.metrics` says what each means). A
repeated id, or a result naming an image the ground truth lacks, is a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vitpose_jax import checkpoint, models, skeletons, zoo
from vitpose_jax.data.coco import DataError
from vitpose_jax.evaluation import evaluators, metrics


def _score_results(args) -> dict:
  schema = skeletons.get(args.schema)
  try:
    with open(args.results) as f:
      results = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'{args.results}: cannot read results ({e})') from None
  if not isinstance(results, list):
    raise ValueError(f'{args.results}: not a COCO results list')
  scorer = metrics.wholebody_metrics if schema.parts else metrics.coco_keypoint_metrics
  try:
    out = scorer(args.gt, results, schema)
  except metrics.ResultsError as e:
    raise ValueError(f'{args.results}: {e}') from None
  out['box_source'] = 'as in the results file'
  return out


def _evaluate_run(args) -> dict:
  from vitpose_jax.predict import Predictor  # JAX work only on this path

  predictor = Predictor.from_run(args.workdir, step=args.step, flip_test=not args.no_flip)
  if args.task is None:
    path = os.path.join(zoo.resolve(args.workdir), 'config.json')
    try:
      with open(path) as f:
        evals = json.load(f)['evals']
    except (OSError, json.JSONDecodeError, KeyError) as e:
      raise ValueError(f'{path}: no evals to run ({e}); pass --task and the data') from None
  else:
    if args.synthetic:
      data = dict(source='synthetic', population=args.synthetic, num=args.num, seed=args.seed)
    elif args.annotations and args.images:
      data = dict(source='coco', annotations=args.annotations, images=args.images)
    else:
      raise ValueError('--task needs --annotations and --images, or --synthetic POPULATION')
    evals = {args.task: dict(type='keypoints', task=args.task, data=data,
                             detections=args.detections, results_out=args.results_out,
                             batch_size=args.batch_size)}
  return evaluators.run_evaluators(evals, predictor)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m vitpose_jax.evaluate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--gt', help='COCO-format ground truth (results mode)')
  parser.add_argument('--results', help='COCO results JSON to score (results mode)')
  parser.add_argument('--schema', help='schema whose sigmas score the results (results mode)')
  parser.add_argument('--workdir', help='run directory to evaluate')
  parser.add_argument('--step', type=checkpoint.parse_step,
                      help='checkpoint step, or "best" (default: the latest)')
  parser.add_argument('--task', help='task to evaluate (default: the evals of config.json)')
  parser.add_argument('--annotations', help='validation annotations (COCO format)')
  parser.add_argument('--images', help='validation image folder')
  parser.add_argument('--synthetic', help='evaluate on a synthetic population instead')
  parser.add_argument('--num', type=int, default=200, help='synthetic instances (default 200)')
  parser.add_argument('--seed', type=int, default=0, help='synthetic seed (default 0)')
  parser.add_argument('--detections', help='COCO detection results: evaluate on these boxes')
  parser.add_argument('--results-out', help='write the predictions (COCO results format)')
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--no-flip', action='store_true', help='skip the flip test')
  args = parser.parse_args(argv)
  results_mode = any((args.gt, args.results, args.schema))
  if results_mode == bool(args.workdir):
    parser.error('give either --gt, --results and --schema, or --workdir')
  if results_mode and not (args.gt and args.results and args.schema):
    parser.error('results mode needs --gt, --results and --schema')
  try:
    out = _score_results(args) if results_mode else _evaluate_run(args)
  except (ValueError, DataError, skeletons.SchemaError, checkpoint.CheckpointError,
          models.ModelConfigError, zoo.ZooError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(out))
  return 0


if __name__ == '__main__':
  sys.exit(main())
