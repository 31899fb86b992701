"""python -m vitpose_jax.data.prepare: pack a COCO-format dataset for training and evaluation.

    python -m vitpose_jax.data.prepare --annotations person_keypoints_train.json \\
        --images train2017/ --schema coco17 --out /data/packed/coco_train

Writes a TFDS array_record dataset (one record per person instance). Training packs datasets into
the cache on first use by itself; this command is for packing ahead of time or onto other storage.
Bad annotations are skipped and counted (the counts are printed and stored with the dataset);
``--strict`` turns the first one into an error instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from vitpose_jax import skeletons
from vitpose_jax.data.coco import DataError
from vitpose_jax.data.packing import pack_coco


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m vitpose_jax.data.prepare', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--annotations', required=True, help='COCO-format keypoint JSON')
  parser.add_argument('--images', required=True, help='folder the file_names are relative to')
  parser.add_argument('--schema', required=True,
                      help='a built-in schema name or the path of a JSON schema')
  parser.add_argument('--out', required=True, help='output folder (must not exist yet)')
  parser.add_argument('--split', default='train', help='split name to store (default: train)')
  parser.add_argument('--strict', action='store_true',
                      help='fail on the first bad annotation instead of skipping and counting')
  args = parser.parse_args(argv)
  if os.path.exists(args.out):
    print(f'error: {args.out} already exists; choose a new folder', file=sys.stderr)
    return 2
  try:
    packed, report = pack_coco(args.annotations, args.images, skeletons.get(args.schema), args.out,
                               split=args.split, strict=args.strict)
  except (DataError, skeletons.SchemaError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(report.summary())
  print(f'packed {report.kept} instances into {packed.path} (split {args.split!r})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
