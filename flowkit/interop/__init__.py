"""Runs that move data between a flowkit store and the formats users already have.

- :mod:`~flowkit.interop.export`: store -> mmaction2 rawframes (JPEG frames, 8-bit flow
  quantised as denseflow does, annotation lists), resumable and parallel;
- :mod:`~flowkit.interop.ingest`: rawframes folders and denseflow HDF5 files -> store, with
  labels from annotation lists, Kinetics CSV files or the folder layout.

The formats themselves are :mod:`flowkit.rawframes`, :mod:`flowkit.denseflow` and
:mod:`flowkit.annotations`.
"""
from .export import ExportConfig, ExportSummary, export_rawframes
from .ingest import ImportConfig, ImportSummary, import_rawframes

__all__ = ["ExportConfig", "ExportSummary", "export_rawframes", "ImportConfig", "ImportSummary",
           "import_rawframes"]
