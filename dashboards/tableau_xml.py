"""Tableau XML for the ``tableau`` views: data sources (``.tds``) and the parts of workbooks.

Everything is built with lxml from :mod:`dashboards.catalog`, so a data source always lists
exactly the view's columns. Ids that Tableau would randomise (data source names, uuids) are
derived from the content, so regenerating the files gives byte-identical output and a
review diff shows only real changes.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass

from lxml import etree

from .catalog import SCHEMA, Column, View

__all__ = ["Connection", "DEFAULT_CONNECTION", "TABLEAU_VERSION", "SOURCE_BUILD", "USER_NS",
           "datasource_name", "datasource_element", "instance_name", "stable_uuid",
           "to_bytes"]

TABLEAU_VERSION = "18.1"
SOURCE_BUILD = "2026.1.0 (20261.26.0211.1127)"
USER_NS = "http://www.tableausoftware.com/xml/user"

# Tableau's ODBC-style remote types for PostgreSQL columns, by Tableau datatype.
_REMOTE_TYPE = {"string": "130", "integer": "20", "real": "5", "boolean": "11", "date": "7", "datetime": "135"}
_AGGREGATION = {"string": "Count", "integer": "Sum", "real": "Sum", "boolean": "Count", "date": "Year",
                "datetime": "Year"}
# Column-instance derivation prefixes Tableau writes into field names, e.g. [sum:total_kwh:qk].
_PREFIX = {"None": "none", "Sum": "sum", "Avg": "avg", "Max": "max", "Min": "min", "Count": "cnt",
           "Hour": "hr", "User": "usr", "Day-Trunc": "tdy", "Hour-Trunc": "thr", "Month-Trunc": "tmn", "Year": "yr"}


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a deployment's PostgreSQL is. The password is never written: Tableau asks for it."""

    server: str = "localhost"
    port: int = 5432
    dbname: str = "gridsight"
    username: str = "tableau_reader"
    sslmode: str = "require"


DEFAULT_CONNECTION = Connection()


def _b32(text: str, length: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().lower()[:length]


def stable_uuid(text: str) -> str:
    """A uuid in Tableau's ``{...}`` form, derived from ``text`` so regeneration is reproducible."""
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "gridsight:" + text)).upper() + "}"


def datasource_name(view: View) -> str:
    """Tableau's internal name of the data source on ``view`` (``federated.`` + 28 characters)."""
    return f"federated.{_b32('datasource:' + view.name, 28)}"


def instance_name(column: str, derivation: str, kind: str) -> str:
    """A column instance as a worksheet names it, e.g. ``[sum:total_kwh:qk]``.

    ``kind`` is ``nk`` (nominal key), ``ok`` (ordinal key) or ``qk`` (quantitative key).
    """
    return f"[{_PREFIX[derivation]}:{column}:{kind}]"


def _connection_name(view: View) -> str:
    return f"postgres.{_b32('connection:' + view.name, 28)}"


def _column_element(col: Column) -> etree._Element:
    attrs = {"caption": col.caption, "datatype": col.datatype, "name": f"[{col.name}]", "role": col.role}
    if col.semantic_role:
        attrs["semantic-role"] = col.semantic_role
    attrs["type"] = col.tableau_type
    return etree.Element("column", attrs)


def datasource_element(view: View, conn: Connection = DEFAULT_CONNECTION) -> etree._Element:
    """The ``<datasource>`` for ``view``: a live PostgreSQL connection to ``tableau.<view>``
    with its metadata records and column captions, as Tableau writes it in a ``.tds``."""
    ds = etree.Element("datasource", {"caption": view.caption, "inline": "true", "name": datasource_name(view),
                                      "version": TABLEAU_VERSION}, nsmap={"user": USER_NS})
    fed = etree.SubElement(ds, "connection", {"class": "federated"})
    named = etree.SubElement(etree.SubElement(fed, "named-connections"), "named-connection",
                             {"caption": conn.server, "name": _connection_name(view)})
    etree.SubElement(named, "connection", {
        "authentication": "username-password", "class": "postgres", "dbname": conn.dbname,
        "odbc-native-protocol": "", "one-time-sql": "", "port": str(conn.port), "server": conn.server,
        "sslmode": conn.sslmode, "username": conn.username})
    etree.SubElement(fed, "relation", {"connection": _connection_name(view), "name": view.name,
                                       "table": f"[{SCHEMA}].[{view.name}]", "type": "table"})
    records = etree.SubElement(fed, "metadata-records")
    for ordinal, col in enumerate(view.columns, start=1):
        rec = etree.SubElement(records, "metadata-record", {"class": "column"})
        for tag, text in (("remote-name", col.name), ("remote-type", _REMOTE_TYPE[col.datatype]),
                          ("local-name", f"[{col.name}]"), ("parent-name", f"[{view.name}]"),
                          ("remote-alias", col.name), ("ordinal", str(ordinal)),
                          ("local-type", col.datatype), ("aggregation", _AGGREGATION[col.datatype]),
                          ("contains-null", "true")):
            etree.SubElement(rec, tag).text = text
    etree.SubElement(ds, "aliases", {"enabled": "yes"})
    for col in view.columns:
        ds.append(_column_element(col))
    etree.SubElement(ds, "layout", {"dim-ordering": "alphabetic", "measure-ordering": "alphabetic",
                                    "show-structure": "true"})
    return ds


def to_bytes(root: etree._Element) -> bytes:
    """Serialise as Tableau does: XML declaration, UTF-8, two-space indentation."""
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
