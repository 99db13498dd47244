"""Concept analysis (Wang et al., SPIE Medical Imaging 2019; TCAV, Kim et al., ICML 2018) and concept bottleneck
models (Koh et al., ICML 2020).

Which radiological features (concepts) a network encodes at a layer (linear probes on pooled activations),
where in an image it finds them (concept maps), how each drives each class (directional derivatives along the
concept direction, TCAV scores tested against random directions), and whether explanations that disagree with the
prediction flag wrong predictions. A concept bottleneck predicts the concepts and the class from them through
readable weights, and lets an expert correct the concepts at test time.
"""

from medexplain.concepts.activations import Activations, Augmentation, collect_activations, pool_activation
from medexplain.concepts.analysis import (
    ConceptReport,
    ConceptSettings,
    analyse,
    analyse_activations,
    class_probabilities,
)
from medexplain.concepts.annotations import ConceptData, read_concept_data, select_concepts, usable_concepts
from medexplain.concepts.bottleneck import MODES, BottleneckSettings, train_bottleneck
from medexplain.concepts.consistency import (
    ConceptClassTable,
    explain_images,
    inconsistency,
    learn_table,
    read_table,
    wrong_prediction_auroc,
)
from medexplain.concepts.gallery import ConceptMapGallery, concept_map_gallery
from medexplain.concepts.influence import (
    bagged_direction,
    directional_derivatives,
    holm,
    layer_direction,
    probe_direction,
    resampled_directions,
    score_correlation,
    tcav_scores,
    tcav_significance,
)
from medexplain.concepts.intervention import bottleneck_summary, concept_aurocs, intervention_curve
from medexplain.concepts.maps import ConceptMaps
from medexplain.concepts.outputs import write_report
from medexplain.concepts.probes import (
    Probe,
    ProbeScores,
    cross_validated_probability,
    examples_needed,
    fit_probe,
    learning_curve,
    score_probe,
)

__all__ = [
    "MODES",
    "Activations",
    "Augmentation",
    "BottleneckSettings",
    "ConceptClassTable",
    "ConceptData",
    "ConceptMapGallery",
    "ConceptMaps",
    "ConceptReport",
    "ConceptSettings",
    "Probe",
    "ProbeScores",
    "analyse",
    "analyse_activations",
    "bagged_direction",
    "bottleneck_summary",
    "class_probabilities",
    "collect_activations",
    "concept_aurocs",
    "concept_map_gallery",
    "cross_validated_probability",
    "directional_derivatives",
    "examples_needed",
    "explain_images",
    "fit_probe",
    "holm",
    "inconsistency",
    "intervention_curve",
    "layer_direction",
    "learn_table",
    "learning_curve",
    "pool_activation",
    "probe_direction",
    "read_concept_data",
    "read_table",
    "resampled_directions",
    "score_correlation",
    "score_probe",
    "select_concepts",
    "tcav_scores",
    "tcav_significance",
    "train_bottleneck",
    "usable_concepts",
    "write_report",
    "wrong_prediction_auroc",
]
