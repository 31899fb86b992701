"""Synthetic multi-population pose data, written in COCO format so the real-data path reads it.

    python -m vitpose_jax.synthetic --out DIR --population adult --split train --num 500 \
        --seed 0 [--style shifted] [--preview grid.png]

Populations are records (:mod:`~vitpose_jax.synthetic.populations`); the built-in ones and their
schemas: ``adult`` → ``coco17``, ``adult_wholebody`` → ``coco_wholebody133``, ``infant`` →
``infant_smil25``, ``wheelchair`` → ``wheelchair23``, ``infant_coco`` (infants drawn as
``infant``, labelled with COCO's 17 points as SyRIP labels infants) → ``coco17``. Each person
is a small 3-D figure (:mod:`~vitpose_jax.synthetic.body`): a forward-kinematics skeleton with
the population's proportions and joint angles from its pose sampler
(:mod:`~vitpose_jax.synthetic.poses`), dressed in shaded tubes and ellipsoids (clothing patterns,
hair, a face with drawn features, five-fingered hands, shoes; for wheelchair users a wheelchair,
:mod:`~vitpose_jax.synthetic.props`), seen orthographically from a viewpoint the population's
view draws (:mod:`~vitpose_jax.synthetic.views`) and z-buffered
(:mod:`~vitpose_jax.synthetic.scene`, :mod:`~vitpose_jax.synthetic.render`), so self-, mutual and
occluder occlusion come from depth and every label comes from the geometry that drew the pixels.
A style (:mod:`~vitpose_jax.synthetic.styles`: ``plain``, the default, or ``shifted``) sets the
lighting, camera tilt and framing, textures and sensor any population is drawn with.

Output: ``DIR/annotations.json`` and ``DIR/images/000000000001.jpg`` … (JPEG quality 90 in the
plain style, widths 320-512, heights 256-448). An image may hold several people, so there are at
most ``num`` images. The JSON holds ``info`` (generator_version, population, split, seed, schema,
and the style unless it is plain), ``images`` (id, file_name relative to ``DIR/images``, width,
height), ``categories`` (one: id 1, 'person', the schema's keypoint names, its links as 1-based
index pairs) and ``annotations``: id, image_id, category_id 1, iscrowd 0, bbox, area,
segmentation, num_keypoints (labelled points, v > 0, over the whole schema) and ``keypoints``
(flat K×3 [x, y, v]). Whole-body adults use COCO-WholeBody's layout: ``keypoints`` holds the 17
body points and ``foot_kpts`` (6), ``face_kpts`` (68), ``lefthand_kpts`` and ``righthand_kpts``
(21 each) the rest, with ``face_box``, ``lefthand_box``, ``righthand_box`` ([x, y, w, h] around
the part's labelled points, zeros when none) and
``face_valid``, ``lefthand_valid``, ``righthand_valid``, ``foot_valid`` (some point labelled);
:func:`vitpose_jax.data.coco.annotation_keypoints` assembles the 133.

Coordinates: pixels, x right and y down, integers at pixel centres (the COCO/mmpose convention):
pixel (row i, column j) has its centre at (x, y) = (j, i) and covers [j - 0.5, j + 0.5) ×
[i - 0.5, i + 0.5). A point is inside the image when 0 <= x <= width - 1 and 0 <= y <= height - 1.
``segmentation`` is COCO polygons of the instance's visible silhouette (a wheelchair user's
includes the chair), one per connected part, along half-integer pixel edges so that pycocotools
rasterises them back to the mask; holes are filled. ``bbox`` is pycocotools' ``toBbox`` of that
filled mask, [first column, first row, width, height] in whole pixels, and ``area`` its pixel count.
Visibility: 2 visible; 1 inside the image but covered (by a nearer part of the same body, another
person or an occluder); 0 outside the image, with x = y = 0.

Keypoints sit where a model should find them: joints inside the drawn limb at that joint, the 68
face landmarks (iBUG 300-W order) on the drawn jaw line, brows, eyes, nose and lips, the 21 hand
points on the drawn finger segments (an infant's ``hand_tip`` is the middle finger's middle
joint, the front of a fist), the six chair points on the drawn wheel hubs, tyre bottoms and
footrests. A person's LEFT keypoint is their anatomical left, so seen from behind it lies on the
image's left. Internal joints (shoulders, hips, the infant spine and head centre) are visible when
the body around them is the nearest surface there.

Generation is deterministic: image k draws from a NumPy Generator seeded by (seed, split,
population stream, k), so equal arguments give byte-identical files, and train and val differ; a
style draws from a child stream of that key, so the people are the same draws in every style.
``GENERATOR_VERSION`` names the bytes: it enters the cache path and shipped models' provenance.

Training and evaluation reach this package only through the data source registry: a spec
``dict(source='synthetic', population=, num=, seed=, style=)`` resolves to cached COCO files
(:mod:`~vitpose_jax.synthetic.cache`), generated on first use with progress printed.

Seeds: the val split at seed 0 is for checkpoint selection and tuning. Seeds from
``TEST_SEED_START`` (1000) on are reserved for final test numbers: they are never used for
training, checkpoint selection or tuning, and the trainer refuses a training or validation data
spec that names one. Reported test tables say which test seed they used.
"""

from __future__ import annotations

from vitpose_jax.synthetic.cache import SHARD_SIZE, dataset, generate_datasets
from vitpose_jax.synthetic.populations import POPULATIONS, Population, register
from vitpose_jax.synthetic.scene import HEIGHT_RANGE, WIDTH_RANGE, Instance, Scene, render_scene
from vitpose_jax.synthetic.styles import JPEG_QUALITY, STYLES, Style
from vitpose_jax.synthetic.writer import (
    ANNOTATION_FILE, GENERATOR_VERSION, IMAGE_DIR, SPLITS, TEST_SEED_START, generate, write_preview)

__all__ = [
    'ANNOTATION_FILE', 'GENERATOR_VERSION', 'HEIGHT_RANGE', 'IMAGE_DIR', 'JPEG_QUALITY',
    'POPULATIONS', 'SHARD_SIZE', 'SPLITS', 'STYLES', 'TEST_SEED_START', 'WIDTH_RANGE', 'Instance',
    'Population', 'Scene', 'Style', 'dataset', 'generate', 'generate_datasets', 'register',
    'render_scene', 'write_preview',
]
