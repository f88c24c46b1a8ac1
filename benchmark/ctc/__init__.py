"""The Cell Tracking Challenge (CTC) folder format: the one interchange format between stages.

Readers are lazy per frame; writers derive lineage from the labels actually written and
are atomic (write to a temporary folder, then rename), so nothing half-written is left behind.
"""

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track, read_tiff, read_tracks, write_tiff, write_tracks
from benchmark.ctc.sequence import CTCSequence, ResultSequence, list_sequences
from benchmark.ctc.validate import Problem, frame_ranges, validate_gt, validate_result, validate_sequence
from benchmark.ctc.window import window_sequence
from benchmark.ctc.writer import lineage_from_labels, write_result, write_sequence

__all__ = [
    "CTCFormatError",
    "CTCSequence",
    "Problem",
    "ResultSequence",
    "Track",
    "lineage_from_labels",
    "frame_ranges",
    "list_sequences",
    "read_tiff",
    "read_tracks",
    "validate_gt",
    "validate_result",
    "validate_sequence",
    "window_sequence",
    "write_result",
    "write_sequence",
    "write_tiff",
    "write_tracks",
]
