"""Downstream models trained on a (synthetic or real) CTC dataset and applied to a real sequence.

- ``downstream.segmenter``: StarDist 2D trained from scratch (TensorFlow is imported lazily).
- ``downstream.tracker``: a learned association tracker (link + division classifiers, LAP linking).
"""
