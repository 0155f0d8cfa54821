"""Selective search (Uijlings, van de Sande, Gevers and Smeulders, IJCV 2013): class-agnostic
region proposals for R-CNN from a bottom-up hierarchy of image regions.

1. Initial regions: Felzenszwalb and Huttenlocher's graph segmentation
   (``skimage.segmentation.felzenszwalb``, whose ``scale`` is the paper's k on 0..255
   intensities) of the image rescaled to [0, 1] (one min and max over all channels).
2. Features per region: a colour histogram (25 bins per channel), a texture histogram
   (Gaussian derivatives, sigma = 1, in 8 orientations theta = 0, 45, ..., 315 degrees,
   half-wave rectified max(0, cos(theta) d/dx + sin(theta) d/dy) and scaled by their
   largest value per channel; 10 bins each), each L1-normalised over the whole vector; the
   size in pixels and the bounding box.
3. Greedy grouping: s(i, j) = s_colour + s_texture + s_size + s_fill with histogram
   intersection sum_k min(h_i[k], h_j[k]) for colour and texture,
   s_size = 1 - (size_i + size_j) / size_image and
   s_fill = 1 - (area(bbox_ij) - size_i - size_j) / size_image. The most similar pair of
   adjacent regions (4-neighbour pixels with different labels) merges into a new region
   (histograms: the size-weighted average, bbox: the union) until one region is left;
   ties go to the lower pair of region numbers. Every region, initial or merged, is a
   proposal.
4. Diversification: one hierarchy per Felzenszwalb scale (the paper also varies colour
   spaces and similarity subsets; this keeps one of each). Ranking, as the paper: a region
   at position i from the top of its hierarchy (the whole image is 1) gets rank i * u with
   u uniform in [0, 1) from a generator seeded with ``seed``; the lists merge and sort by
   rank, an identical box keeps its best rank, and boxes narrower or shorter than
   ``min_box_size`` pixels go.

Defaults suit images of 64..512 pixels: scales (50, 100, 200) and a Felzenszwalb min_size
that grows with the image (max(10, H * W // 2500): 10 pixels at 64 x 64, 104 at 512 x 512).
"""

import heapq
import warnings

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

COLOUR_BINS = 25
TEXTURE_BINS = 10
ORIENTATIONS = 8


def selective_search(image, *, scales=(50, 100, 200), sigma=0.8, min_size=None,
                     min_box_size=4, max_boxes=2000, seed=0):
    """float32 (K, 4) proposal boxes (x1, y1, x2, y2), best-ranked first, K <= max_boxes.

    ``image`` is (C, H, W) (channels first, any C >= 1) or (H, W), any real values.
    ``scales`` are Felzenszwalb's k, one hierarchy each; ``sigma`` its pre-smoothing;
    ``min_size`` its smallest segment (None: max(10, H * W // 2500)). See the module
    docstring for the features, the grouping and the ranking.
    """
    pixels = _as_unit_hwc(image)
    height, width = pixels.shape[:2]
    if min_size is None:
        min_size = max(10, height * width // 2500)
    if not len(scales) or max_boxes < 0 or min_box_size < 0:
        raise ValueError("selective_search: need at least one scale, max_boxes >= 0 and "
                         f"min_box_size >= 0, got {scales!r}, {max_boxes!r}, {min_box_size!r}")
    bins = _pixel_bins(pixels)
    rng = np.random.default_rng(seed)
    boxes, ranks = [], []
    for scale in scales:
        with warnings.catch_warnings():   # skimage warns on C != 3; any C is meant here
            warnings.filterwarnings("ignore", "Got image with third dimension", RuntimeWarning)
            labels = felzenszwalb(pixels, scale=scale, sigma=sigma, min_size=int(min_size),
                                  channel_axis=-1)
        created = _hierarchy(labels, bins)                        # creation order, top last
        boxes.append(created)
        ranks.append(np.arange(len(created), 0, -1) * rng.random(len(created)))
    boxes, ranks = np.concatenate(boxes), np.concatenate(ranks)
    order = np.argsort(ranks, kind="stable")
    _, first = np.unique(boxes[order], axis=0, return_index=True)  # best rank of each box
    boxes = boxes[order[np.sort(first)]]
    sides = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[np.all(sides >= min_box_size, axis=1)]
    return boxes[:max_boxes].astype(np.float32)


def _as_unit_hwc(image):
    """(H, W, C) float64 in [0, 1] from a (C, H, W) or (H, W) real image."""
    array = np.asarray(image)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"selective_search: image must be a real array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError("selective_search: image must have shape (C, H, W) or (H, W) with "
                         f"C, H, W >= 1, got {np.shape(image)}")
    array = np.moveaxis(array.astype(np.float64), 0, -1)
    if not np.all(np.isfinite(array)):
        raise ValueError("selective_search: image has non-finite values")
    low, span = array.min(), np.ptp(array)
    return (array - low) / span if span > 0 else np.zeros_like(array)


def _pixel_bins(pixels):
    """Per-pixel histogram bins: colour (H, W, C) in 0..24, texture (H, W, C * 8) in 0..9."""
    colour = np.minimum((pixels * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    theta = np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)
    texture = []
    for c in range(pixels.shape[2]):
        dx = ndimage.gaussian_filter(pixels[..., c], 1.0, order=(0, 1))
        dy = ndimage.gaussian_filter(pixels[..., c], 1.0, order=(1, 0))
        response = np.maximum(dx[..., None] * np.cos(theta) + dy[..., None] * np.sin(theta), 0)
        top = response.max()
        response = response / top if top > 0 else response
        texture.append(np.minimum((response * TEXTURE_BINS).astype(np.int64), TEXTURE_BINS - 1))
    return colour, np.concatenate(texture, axis=-1)


def _histograms(labels, bins, count, nbins):
    """(count, D * nbins) L1-normalised histograms of (H, W, D) bins over labelled regions."""
    depth = bins.shape[-1]
    index = (labels[..., None] * depth + np.arange(depth)) * nbins + bins
    hist = np.bincount(index.ravel(), minlength=count * depth * nbins).astype(np.float64)
    hist = hist.reshape(count, depth * nbins)
    return hist / hist.sum(axis=1, keepdims=True)


def _adjacent_pairs(labels):
    """(E, 2) distinct label pairs (a < b) that touch across a horizontal or vertical edge."""
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    return np.unique(pairs, axis=0)


class _Regions:
    """Every region of one hierarchy (initial ones first, then each merge) as array rows."""

    def __init__(self, labels, bins):
        _, labels = np.unique(labels, return_inverse=True)
        labels = labels.reshape(bins[0].shape[:2])
        count = int(labels.max()) + 1
        rows = 2 * count - 1                                       # a binary tree's nodes
        self.colour = np.empty((rows, bins[0].shape[-1] * COLOUR_BINS))
        self.texture = np.empty((rows, bins[1].shape[-1] * TEXTURE_BINS))
        self.size = np.empty(rows)
        self.box = np.empty((rows, 4))
        self.colour[:count] = _histograms(labels, bins[0], count, COLOUR_BINS)
        self.texture[:count] = _histograms(labels, bins[1], count, TEXTURE_BINS)
        self.size[:count] = np.bincount(labels.ravel(), minlength=count)
        self.box[:count] = [(s[1].start, s[0].start, s[1].stop, s[0].stop)
                            for s in ndimage.find_objects(labels + 1)]
        self.count, self.labels, self.image_size = count, labels, labels.size

    def similarity(self, a, b):
        """s_colour + s_texture + s_size + s_fill of regions a[k] and b[k] (arrays)."""
        colour = np.minimum(self.colour[a], self.colour[b]).sum(axis=1)
        texture = np.minimum(self.texture[a], self.texture[b]).sum(axis=1)
        both = self.size[a] + self.size[b]
        lo = np.minimum(self.box[a, :2], self.box[b, :2])
        hi = np.maximum(self.box[a, 2:], self.box[b, 2:])
        fill = 1 - (np.prod(hi - lo, axis=1) - both) / self.image_size
        return colour + texture + (1 - both / self.image_size) + fill

    def merge(self, i, j):
        """Region number of the new region i ∪ j (size-weighted histograms, union box)."""
        t, self.count = self.count, self.count + 1
        wi, wj = self.size[i], self.size[j]
        for hist in (self.colour, self.texture):
            hist[t] = (wi * hist[i] + wj * hist[j]) / (wi + wj)
        self.size[t] = wi + wj
        self.box[t, :2] = np.minimum(self.box[i, :2], self.box[j, :2])
        self.box[t, 2:] = np.maximum(self.box[i, 2:], self.box[j, 2:])
        return t


def _hierarchy(labels, bins):
    """(R, 4) boxes of every region the greedy grouping creates, in creation order."""
    regions = _Regions(labels, bins)
    pairs = _adjacent_pairs(regions.labels)
    neighbours = [set() for _ in range(regions.count)]
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    similarity = regions.similarity(pairs[:, 0], pairs[:, 1])
    heap = list(zip((-similarity).tolist(), pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    heapq.heapify(heap)
    alive = np.ones(len(regions.size), dtype=bool)
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue                                               # a stale pair
        t = regions.merge(i, j)
        alive[i] = alive[j] = False
        around = (neighbours[i] | neighbours[j]) - {i, j}
        for n in around:
            neighbours[n] -= {i, j}
            neighbours[n].add(t)
        neighbours.append(around)
        if around:
            others = np.fromiter(around, dtype=np.int64, count=len(around))
            for s, n in zip((-regions.similarity(others, t)).tolist(), others.tolist()):
                heapq.heappush(heap, (s, n, t))
    return regions.box[:regions.count]
