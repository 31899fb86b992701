"""python -m vitpose_jax.synthetic: generate a synthetic COCO-format pose dataset (see the
package docstring), optionally with a preview sheet."""

from __future__ import annotations

import argparse
import sys

from vitpose_jax.synthetic import POPULATIONS, SPLITS, STYLES, generate, write_preview


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(2, f'{self.prog}: error: {message}\n')


def _int_at_least(minimum: int):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
    return value
  return parse


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog='python -m vitpose_jax.synthetic',
                   description='Generate a synthetic COCO-format pose dataset.')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--population', required=True, choices=list(POPULATIONS),
                      help='who is drawn (and so the keypoint schema)')
  parser.add_argument('--split', required=True, choices=SPLITS,
                      help='each split has its own random stream')
  parser.add_argument('--num', required=True, type=_int_at_least(1),
                      help='number of person instances')
  parser.add_argument('--seed', type=_int_at_least(0), default=0, help='random seed (default 0)')
  parser.add_argument('--style', choices=list(STYLES), default='plain',
                      help='lighting, camera, textures and sensor (default plain)')
  parser.add_argument('--preview', help='also write a PNG grid of images with keypoints drawn')
  args = parser.parse_args(argv)
  try:
    path = generate(args.out, args.population, args.split, args.num, args.seed,
                    style=args.style)
    if args.preview:
      write_preview(args.out, args.preview)
  except (OSError, ValueError) as e:
    parser.exit(1, f'{parser.prog}: error: {e}\n')
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
