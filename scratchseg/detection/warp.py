"""R-CNN's region warping: each proposal, with a margin of context, resampled to S x S.

R-CNN (section 2.1) dilates each box so that, once warped, ``context`` pixels of
image surround it (the paper: 16 of 227), then stretches it to the CNN's fixed
input size whatever its aspect ratio. The sampling is bilinear at the output
pixels' centres; outside the image it reads 0.
"""

import numpy
from scipy import ndimage


def warp_regions(image, boxes, size, context=2):
    """(R, C, size, size) float32 crops of ``image`` (C, H, W) around ``boxes`` (R, 4).

    A box of width w grows by w * context / (size - 2 context) on each side; the
    output pixel (i, j) samples the grown box at x1 + (j + 1/2) w' / size, in image
    coordinates where pixel k spans [k, k + 1) (so index space is that minus 1/2).
    """
    boxes = numpy.asarray(boxes, dtype=numpy.float64).reshape(-1, 4)
    grow = context / (size - 2 * context)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x1, y1 = boxes[:, 0] - grow * widths, boxes[:, 1] - grow * heights
    steps = (numpy.arange(size) + 0.5) / size
    xs = x1[:, None] + steps * (widths * (1 + 2 * grow))[:, None] - 0.5   # (R, size)
    ys = y1[:, None] + steps * (heights * (1 + 2 * grow))[:, None] - 0.5
    grid_y = numpy.broadcast_to(ys[:, :, None], (len(boxes), size, size)).ravel()
    grid_x = numpy.broadcast_to(xs[:, None, :], (len(boxes), size, size)).ravel()
    crops = [ndimage.map_coordinates(channel, [grid_y, grid_x], order=1, mode="constant",
                                     cval=0.0) for channel in image]
    crops = numpy.stack(crops).reshape(len(image), len(boxes), size, size)
    return crops.transpose(1, 0, 2, 3).astype(numpy.float32)
