"""One reader per source format: `read_x(record, where, options) -> Sample | RecordProblem`, pure and picklable."""

from framelm.training.data.formats.common import ReadOptions
from framelm.training.data.formats.detect import FORMATS, READERS, detect_format, get_reader

__all__ = ["FORMATS", "READERS", "ReadOptions", "detect_format", "get_reader"]
