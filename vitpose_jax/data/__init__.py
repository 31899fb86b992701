"""Data: COCO-format reading, the source registry, TFDS packing, transforms, the pipeline."""
