"""Synthetic datasets with known ground truth, deterministic under a seed.

- :func:`fundus` / :func:`write_fundus`: colour fundus photographs with diabetic-retinopathy-like lesions
  (microaneurysms, haemorrhages, hard exudates), a grade from the lesion counts (:func:`grade_from_counts`) or
  referable DR as the label, exact per-type masks, and a distractor concept (lens dust) the grade does not depend on.
- :func:`deformation` / :func:`write_deformation`: 2D images or 3D volumes of a brain-like phantom where the
  disease class is a local shrinkage (atrophy) of one structure, with its region as a mask and the true
  displacement field and Jacobian determinant.
- :func:`blobs`: noise images or volumes, class 1 with one bright ball-shaped lesion at a random position (in
  memory; the simplest localisation task, e.g. for explaining small 3D models in tests).
"""

from medexplain.data.synth.atrophy import DeformationSet, brain_sample, deformation, write_deformation
from medexplain.data.synth.blobs import BlobSet, blobs
from medexplain.data.synth.retina import (
    CONCEPTS,
    FUNDUS_LABELS,
    GRADE_NAMES,
    LESION_TYPES,
    REFERABLE_NAMES,
    FundusSet,
    fundus,
    fundus_sample,
    grade_from_counts,
    write_fundus,
)

__all__ = [
    "CONCEPTS",
    "FUNDUS_LABELS",
    "GRADE_NAMES",
    "LESION_TYPES",
    "REFERABLE_NAMES",
    "BlobSet",
    "DeformationSet",
    "FundusSet",
    "blobs",
    "brain_sample",
    "deformation",
    "fundus",
    "fundus_sample",
    "grade_from_counts",
    "write_deformation",
    "write_fundus",
]
