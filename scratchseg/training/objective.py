"""What a training step minimises: the loss choice, class weights and ignored pixels.

Per pixel, the weight is w = c[y] * m * [y != ignored]: the class weight c of
its label, the paper's border weight m when the run uses the weight map, and 0
on pixels whose mask value is ``--ignore-value`` (class index -1).
Cross-entropy is sum(w * l) / sum(w); the soft Dice loss takes w as its pixel
weights; ``ce+dice`` is their sum.
"""

import numpy

from scratchseg.data.dataset import IGNORE_INDEX

LOSSES = ("ce", "dice", "ce+dice")


def class_weights(spec, dataset):
    """float32 (K,) class weights for ``--class-weights`` = none, balanced or w0,w1,...;
    None for none. balanced: c_k proportional to 1 / (pixels of class k), scaled so the
    mean pixel weight over ``dataset`` is 1."""
    k = dataset.num_classes
    if spec == "none":
        return None
    if spec != "balanced":
        weights = numpy.array([float(w) for w in spec.split(",")], numpy.float32)
        if len(weights) != k:
            raise ValueError(f"--class-weights gives {len(weights)} weights but the masks hold "
                             f"{k} classes (mask values {dataset.class_values})")
        return weights
    counts = numpy.zeros(k, numpy.int64)
    for i in range(len(dataset)):
        mask = dataset[i].mask
        counts += numpy.bincount(mask[mask >= 0].ravel(), minlength=k)
    present = counts > 0
    weights = numpy.where(present, 1.0 / numpy.maximum(counts, 1), 0.0)
    weights *= counts.sum() / max((weights * counts).sum(), 1e-12)
    return numpy.where(present, weights, 1.0).astype(numpy.float32)


def pixel_weights(labels, border_weights, weights_of_class):
    """(labels with ignored pixels set to class 0, float32 weights or None when all are 1)."""
    ignored = labels == IGNORE_INDEX
    if border_weights is None and weights_of_class is None and not ignored.any():
        return labels, None
    weights = numpy.ones(labels.shape, numpy.float32) if border_weights is None \
        else numpy.asarray(border_weights, numpy.float32)
    if weights_of_class is not None:
        weights = weights * weights_of_class[numpy.maximum(labels, 0)]
    weights = numpy.where(ignored, numpy.float32(0), weights)
    return numpy.where(ignored, 0, labels), weights
