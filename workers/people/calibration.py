"""The calibrated distance thresholds that production reads (choosing them is bench/calibration.py's work).

Every embedding space has its own thresholds (`workers.faces.spaces`; `thresholds_for(model_id)` finds them).
The module constants below are the figures of the ``dlib-resnet-v1`` space, kept for callers that predate
spaces: dlib ResNet descriptors (``dlib_face_recognition_resnet_model_v1``, HOG detector with one
upsampling and a centred fallback box, 5-point alignment, no jitter) on lfw-dev, the first five of the ten
standard LFW verification folds, 3,000 pairs (`bench/search.py` and `bench/cluster.py` reproduce them).
"""

from __future__ import annotations

from workers.faces.spaces import DLIB, Thresholds, UnknownSpace, space_of

# 1:1 verification, "same person" when the distance is below it. LFW protocol on lfw-dev (5 folds, 3,000
# pairs): 98.50 % +- 0.43 % with per-fold thresholds 0.615-0.635, AUC 0.9971 (at dlib's usual 0.6: 98.40 %).
# dlib publishes 99.38 % on the original (not deep-funneled) LFW, 10 folds.
VERIFY_THRESHOLD = DLIB.thresholds.verify  # 0.62
# Clustering with average linkage (`cluster_faces`), on all 3,811 lfw-dev faces (2,086 people, 1,340 of them
# with a single photo): pairwise precision 0.895, recall 0.776, F1 0.831, BCubed F1 0.932 (best F1 of
# 0.44-0.60). Lower is more precise: 0.46 gives P 0.968 / R 0.571, 0.44 gives P 0.989 / R 0.460.
# dlib's chinese whispers at 0.5 (face_recognition's default) on the same faces: P 0.237, R 0.871, F1 0.372.
CLUSTER_THRESHOLD = DLIB.thresholds.cluster  # 0.50
# Open-set identification (`identify`): name the nearest enrolled person when closer than this and clearer
# than the runner-up by IDENTIFY_MIN_MARGIN. On lfw-dev, one enrolled photo per person, 1,416 people (a gallery
# far larger than a family's): 74.0 % of queries named right, 1.3 % wrong, the rest unknown; 5.1 % of
# strangers get a name (rates that shrink with the gallery). Top-1 without a threshold: 90.3 %.
IDENTIFY_THRESHOLD = DLIB.thresholds.identify  # 0.50
IDENTIFY_MIN_MARGIN = DLIB.thresholds.identify_margin  # 0.03


def thresholds_for(model_id: str) -> Thresholds:
    """The calibrated thresholds of the space of `model_id` (``<embedder>@<version>``); an unknown or empty id
    (data indexed before spaces were recorded) gets the dlib space's, the only model there was then."""
    try:
        return space_of(model_id).thresholds
    except UnknownSpace:
        return DLIB.thresholds
