"""python -m vitpose_jax.zoo: one line per shipped model, name first, no header.

Columns: name, variant (and input size), size on disk, tasks, and the test AP of each task
(ground-truth boxes, flip test, the test seed named in the model's provenance.json).
"""

from __future__ import annotations

import argparse
import sys

from vitpose_jax import models, zoo


def line(name: str) -> str:
  record = zoo.provenance(name)
  config = models.ModelConfig.load(zoo.PREFIX + name)
  h, w = config.image_size
  test = record.get('test_metrics', {})
  aps = ' '.join(f'{t.name}/AP={test[f"{t.name}/AP"]:.3f}' for t in config.tasks
                 if f'{t.name}/AP' in test)
  return (f'{name}  {config.variant} {h}x{w}  {zoo.size_bytes(name) / 1e6:.1f} MB  '
          f'tasks={",".join(t.name for t in config.tasks)}  test {aps or "not measured"}')


def main(argv: list[str] | None = None) -> int:
  argparse.ArgumentParser(prog='python -m vitpose_jax.zoo', description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
  for name in zoo.names():
    print(line(name))
  return 0


if __name__ == '__main__':
  sys.exit(main())
