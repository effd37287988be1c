"""Meter readers: one module per protocol behind one interface (:mod:`.base`), chosen in config."""

from edge_agent.readers.base import MeterReader, ReaderError, checked_reading
from edge_agent.readers.registry import READER_TYPES, build_reader

__all__ = ["MeterReader", "ReaderError", "checked_reading", "READER_TYPES", "build_reader"]
