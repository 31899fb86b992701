"""Data: COCO-format reading, TFDS packing, the synthetic generator, transforms, the pipeline."""
