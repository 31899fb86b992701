"""The trivial baseline for the synthetic benchmark: the mean training pose placed in each box.

    python experiments/baseline_mean_pose.py              # the default config's data sizes
    python experiments/baseline_mean_pose.py --tasks coco --num-val 64 --seed 1001   # a test set

For every task: the mean of the training instances' labelled keypoints in input-crop coordinates
(the UDP crop of each ground-truth box), then on validation the same crop of each box mapped back
to the image, scored by the same metrics as the trainer (ground-truth boxes). Any trained model
should beat it by a wide margin; it calibrates what an AP on this data means.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vitpose_jax import codec, skeletons, synthetic
from vitpose_jax.data import coco, transforms
from vitpose_jax.evaluation import metrics

TASKS = {'coco': ('coco17', 'adult'), 'wholebody': ('coco_wholebody133', 'adult_wholebody'),
         'infant': ('infant_smil25', 'infant'), 'wheelchair': ('wheelchair23', 'wheelchair')}
IMAGE_SIZE = (256, 192)


def mean_pose(records, k: int) -> np.ndarray:
  total, count = np.zeros((k, 2)), np.zeros((k, 1))
  for r in records:
    matrix = transforms.udp_warp_matrix(r['center'], r['scale'], 0.0, IMAGE_SIZE)
    xy = transforms.warp_points(r['keypoints'].astype(np.float64), matrix)
    labelled = r['keypoints_visible'][:, None] > 0
    total += np.where(labelled, xy, 0)
    count += labelled
  return total / np.maximum(count, 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num-train', type=int, default=800)
  parser.add_argument('--num-val', type=int, default=100)
  parser.add_argument('--seed', type=int, default=0, help='seed of the val data (test: >= 1000)')
  parser.add_argument('--tasks', default='+'.join(TASKS))
  args = parser.parse_args()
  out = {}
  for task in args.tasks.split('+'):
    schema_name, population = TASKS[task]
    schema = skeletons.get(schema_name)
    train_files = synthetic.dataset(population, 'train', args.num_train)
    val_ann, val_images = synthetic.dataset(population, 'val', args.num_val, args.seed)
    train, _ = coco.read_coco(*train_files, schema)
    val, _ = coco.read_coco(val_ann, val_images, schema)
    pose = mean_pose(train, schema.num_keypoints)
    results = []
    for r in val:
      xy = codec.crop_to_image(pose, r['center'], r['scale'], 0.0, image_size=IMAGE_SIZE)
      kps = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
      results.append({'image_id': r['image_id'], 'category_id': 1, 'score': 1.0,
                      'instance_id': r['instance_id'], 'keypoints': kps.ravel().tolist()})
    scorer = metrics.wholebody_metrics if schema.parts else metrics.coco_keypoint_metrics
    out.update(scorer(val_ann, results, schema, prefix=f'{task}/'))
    out.update(metrics.pck_metrics(val, results, schema, prefix=f'{task}/'))
  keys = [k for k in out if k.endswith(('/AP', '/AP_body', '/PCK@0.2'))]
  print(json.dumps({k: round(out[k], 4) for k in keys}))


if __name__ == '__main__':
  main()
