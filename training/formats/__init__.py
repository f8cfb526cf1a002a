"""One reader per source format: `read_x(record, where, options) -> Sample | RecordProblem`, pure and picklable."""

from .common import ReadOptions
from .detect import FORMATS, READERS, detect_format, get_reader

__all__ = ["FORMATS", "READERS", "ReadOptions", "detect_format", "get_reader"]
