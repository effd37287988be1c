"""Meter readers: one module per protocol behind one interface (:mod:`.base`), chosen in config."""

from edge_agent.readers.base import MeterReader, ReaderError, checked_reading
from edge_agent.readers.registry import build_reader, reader_types

__all__ = ["MeterReader", "ReaderError", "checked_reading", "build_reader", "reader_types"]
