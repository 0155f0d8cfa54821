"""Object detection: box geometry, proposals, the R-CNN family and its evaluation."""
