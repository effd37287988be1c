"""Tableau deliverables: the ``tableau`` views' catalog, generated and schema-validated
``.tds``/``.twb`` files, Hyper extracts, TabPy endpoints and the collector's built-in page.

Modules: ``catalog`` (the views as Tableau sees them), ``tableau_xml`` and ``workbooks`` (the XML),
``xsd`` (validation against Tableau's schema), ``files`` (shipped files, ``render``), ``extract``
(Hyper), ``tabpy_endpoints``, ``page`` (SVG charts), ``browser`` (headless Chromium), ``cli``.
The views themselves are created by ``collector/db/migrations/versions/0004_tableau.py``.
"""
