"""Validation of Tableau files against Tableau's official workbook schema (XSD).

Tableau cannot run here, so the schema is the strictest offline check of what we ship.
The schema imports the ``user`` and ``xml`` namespaces without a location; the stub schemas
beside it are wired in when it is loaded, leaving the official file unchanged.

The schema declares one global element, ``workbook``. A data source file (``.tds``) holds a
``<datasource>`` exactly as it appears under ``<workbook><datasources>``, so it is validated
inside a minimal workbook envelope.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

from gridsight.errors import GridsightError

__all__ = ["SCHEMA_DIR", "SCHEMA_VERSION", "TableauFileError", "schema", "validate_file", "validate_xml"]

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
SCHEMA_VERSION = "2026.1.0"
_XSD = SCHEMA_DIR / f"twb_{SCHEMA_VERSION}.xsd"
_STUBS = {
    "http://www.tableausoftware.com/xml/user": SCHEMA_DIR / "user.xsd",
    "http://www.w3.org/XML/1998/namespace": SCHEMA_DIR / "xml.xsd",
}
_XS = "{http://www.w3.org/2001/XMLSchema}"
# The envelope a .tds is checked in: the workbook's required attributes and nothing else.
_ENVELOPE = ('<workbook version="18.1" source-build="2026.1.0 (20261.26.0211.1127)" '
             'xmlns:user="http://www.tableausoftware.com/xml/user"><datasources/>'
             '<explain-data enabled-for-viewer="true" extreme-values-enabled-for-all="true">'
             '<explanation-types/></explain-data></workbook>')


class TableauFileError(GridsightError, ValueError):
    """A Tableau file that is not well-formed XML or breaks the workbook schema.

    ``problems`` lists each violation as ``path:line: message``; the message shows the first three.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        super().__init__(shown)
        self.path = path
        self.problems = problems


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    """The workbook schema with the stub imports resolved (parsed once per process)."""
    doc = etree.parse(str(_XSD))
    for imp in doc.getroot().iter(f"{_XS}import"):
        stub = _STUBS.get(imp.get("namespace", ""))
        if stub is not None and imp.get("schemaLocation") is None:
            imp.set("schemaLocation", stub.as_uri())
    return etree.XMLSchema(doc)


def validate_xml(root: etree._Element, name: str = "<memory>") -> None:
    """Raise :class:`TableauFileError` unless ``root`` (a workbook or datasource) is schema-valid."""
    if root.tag == "datasource":
        envelope = etree.fromstring(_ENVELOPE)
        envelope.find("datasources").append(_copy(root))
        target = envelope
    elif root.tag == "workbook":
        target = root
    else:
        raise TableauFileError(name, [f"{name}: root element is <{root.tag}>, expected <workbook> or <datasource>"])
    xsd = schema()
    if not xsd.validate(target):
        raise TableauFileError(name, [f"{name}:{e.line}: {e.message}" for e in xsd.error_log])


def validate_file(path: str | Path) -> None:
    """Validate a ``.twb`` or ``.tds`` file; raises :class:`TableauFileError` naming each problem."""
    path = Path(path)
    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except etree.XMLSyntaxError as exc:
        raise TableauFileError(str(path), [f"{path}: not well-formed XML: {exc}"]) from None
    validate_xml(root, str(path))


def _copy(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element))
