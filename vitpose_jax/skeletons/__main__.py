"""python -m vitpose_jax.skeletons [NAME] [--json]: list the schemas or show one.

A schema is shown with its keypoints and its flip pairs by name (``left_eye/right_eye``), so a
user schema's derived pairs can be checked before training; side-marked names left unpaired are
listed. ``--json`` prints the full record, the template for a user's own schema file.
"""

from __future__ import annotations

import argparse
import json
import sys

from vitpose_jax import skeletons


def _describe(s: skeletons.Schema) -> str:
  lines = [
      f'{s.name}: {s.num_keypoints} keypoints, {len(s.flip_pairs)} flip pairs, '
      f'{len(s.links)} links',
      f'  keypoints: {", ".join(s.keypoints)}',
  ]
  pairs = ', '.join(f'{s.keypoints[a]}/{s.keypoints[b]}' for a, b in s.flip_pairs)
  lines.append(f'  flip pairs: {pairs or "none"}')
  unpaired = skeletons.unpaired_side_names(s.keypoints, s.flip_pairs)
  if unpaired:
    lines.append(f'  side-marked but unpaired (a flip keeps their labels): {", ".join(unpaired)}')
  if s.parts:
    lines.append('  parts: ' + ', '.join(f'{p} [{a}:{b}]' for p, a, b in s.parts))
  if s.head_segment:
    lines.append(f'  head segment (PCKh): {s.head_segment[0]}-{s.head_segment[1]}')
  lines.append(f'  sigmas: {s.sigma_note}')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m vitpose_jax.skeletons', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('name', nargs='?', help='a registered name or the path of a JSON schema')
  parser.add_argument('--json', action='store_true', help='print the full record as JSON')
  args = parser.parse_args(argv)
  try:
    if args.name is None:
      records = [skeletons.get(n) for n in skeletons.names()]
      if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
      else:
        for r in records:
          print(f'{r.name:<20} K={r.num_keypoints:<4} {r.sigma_note}')
      return 0
    record = skeletons.get(args.name)
  except skeletons.SchemaError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(record.to_dict(), indent=1) if args.json else _describe(record))
  return 0


if __name__ == '__main__':
  sys.exit(main())
