"""`gridsight collector registry import|export` as a user runs it: real subprocesses, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import pytest

from registry_support import document, fetch, table_counts


def _run(db: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db, "GRIDSIGHT_DATA_DIR": str(tmp_path / "collector")}
    for key in ("MQTT_URL", "S3_ENDPOINT_URL", "S3_BUCKET"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "gridsight", "collector", "registry", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.slow
def test_import_then_export_round_trips_through_files(db, tmp_path):
    source = tmp_path / "grid.json"
    source.write_text(json.dumps(document()))

    done = _run(db, tmp_path, "import", str(source))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["meters"]["inserted"] == 3

    out = tmp_path / "exported.json"
    done = _run(db, tmp_path, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    exported = json.loads(out.read_text())
    assert {s["id"]: s["area_type"] for s in exported["sites"]} == {"site-a": "urban", "site-b": "rural"}

    again = _run(db, tmp_path, "import", str(out))
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout.strip().splitlines()[-1])
    assert all(c["inserted"] == 0 and c["updated"] == 0 for c in counts.values()), counts


def test_a_bad_file_exits_non_zero_with_one_line_naming_the_field(db, tmp_path):
    doc = document()
    doc["sites"][1]["longitude"] = 200
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))

    done = _run(db, tmp_path, "import", str(bad))

    assert done.returncode != 0
    assert "sites[1].longitude: must be between -180 and 180" in done.stderr
    assert "Traceback" not in done.stderr
    assert table_counts(db) == (0, 0, 0, 0, 0)


def test_a_missing_file_is_a_one_line_error(db, tmp_path):
    done = _run(db, tmp_path, "import", str(tmp_path / "nope.json"))
    assert done.returncode != 0
    assert "cannot read" in done.stderr and "Traceback" not in done.stderr
    assert fetch(db, "SELECT count(*) FROM regions") == [(0,)]


def test_csv_files_named_after_their_sections_import_together(db, tmp_path):
    (tmp_path / "regions.csv").write_text("id,name\nnorth,North\n")
    (tmp_path / "feeders.csv").write_text("id,region,name,capacity_kw\nn-f1,north,N1,\n")
    (tmp_path / "sites.csv").write_text("id,feeder,latitude,longitude,area_type\n"
                                        "site-a,n-f1,52.37,4.89,urban\nsite-b,n-f1,52.1,5.2,\n")
    (tmp_path / "gateways.csv").write_text("id,site\ngw-a,site-a\n")
    (tmp_path / "meters.csv").write_text("id,gateway,site\nm-a1,gw-a,\nm-b1,gw-a,site-b\n")
    files = [str(tmp_path / f"{s}.csv") for s in ("regions", "feeders", "sites", "gateways", "meters")]

    done = _run(db, tmp_path, "import", *files)

    assert done.returncode == 0, done.stderr
    assert fetch(db, "SELECT m.id, s.lat, s.lon, s.area_type, s.region_id FROM meters m JOIN sites s "
                     "ON s.id = m.site_id ORDER BY m.id") == [("m-a1", 52.37, 4.89, "urban", "north"),
                                                               ("m-b1", 52.1, 5.2, None, "north")]


def test_a_bad_csv_cell_is_named_by_section_row_and_field(db, tmp_path):
    (tmp_path / "regions.csv").write_text("id\nnorth\n")
    (tmp_path / "feeders.csv").write_text("id,region\nn-f1,north\n")
    (tmp_path / "sites.csv").write_text("id,feeder,latitude,longitude\nsite-a,n-f1,52.3,4.8\nsite-b,n-f1,north,4.8\n")

    done = _run(db, tmp_path, "import", *(str(tmp_path / f"{s}.csv") for s in ("regions", "feeders", "sites")))

    assert done.returncode != 0
    assert "sites[1].latitude: must be a number" in done.stderr
    assert table_counts(db) == (0, 0, 0, 0, 0)


def test_a_csv_file_not_named_after_a_section_is_refused(db, tmp_path):
    (tmp_path / "grid.csv").write_text("id\nx\n")
    done = _run(db, tmp_path, "import", str(tmp_path / "grid.csv"))
    assert done.returncode != 0
    assert "a CSV file is named after its section" in done.stderr
