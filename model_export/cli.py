"""`gridsight model ...`: train, verify, score, keygen, sign and publish anomaly models."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, positive_int, run_cli, explain_defaults

__all__ = ["main"]

PROG = "gridsight model"


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be in (0, 0.5], got {value:g}")
    return value


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def _feature_list(text: str) -> tuple[str, ...]:
    from edge_agent.features import FEATURE_DESCRIPTIONS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated feature names")
    unknown = [n for n in names if n not in FEATURE_DESCRIPTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown feature {unknown[0]!r} (see 'gridsight model features')")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a feature is named twice")
    return names


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _max_samples(text: str) -> int | float | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, a row count or a fraction, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction must be in (0, 1], got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Train, export, verify, score, sign and publish "
                                                            "the Isolation Forest the gateways run.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train on readings (CSV, PostgreSQL, raw archive); write a verified model",
                       description="Train on readings — a CSV (meter_id,ts and kwh = interval energy, or "
                                   "energy_kwh = cumulative register; optional power_w, voltage_v, meter_class), the "
                                   "collector's PostgreSQL readings, or its raw archive — and write a compact "
                                   "ONNX model whose scores match scikit-learn within 1e-5.")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--readings", type=Path, help="readings file (CSV, or Parquet by its .parquet suffix)")
    source.add_argument("--database-url", help="collector PostgreSQL: train on its readings table")
    source.add_argument("--archive-dir", type=Path, help="train on the raw archive in this directory store")
    source.add_argument("--archive-s3-bucket", help="train on the raw archive in this S3 bucket")
    t.add_argument("--s3-endpoint-url", help="S3-protocol endpoint for --archive-s3-bucket")
    t.add_argument("--since", type=_date, help="first UTC day (YYYY-MM-DD) of database/archive readings")
    t.add_argument("--until", type=_date, help="last UTC day (YYYY-MM-DD) of database/archive readings")
    t.add_argument("--meter-classes", type=Path, help="CSV meter_id,meter_class for per-class training")
    t.add_argument("--out", required=True, type=Path,
                   help="model file to write; with --by-class, a directory for one model per class")
    target = t.add_mutually_exclusive_group()
    target.add_argument("--contamination", type=_fraction, help="flag this share of training intervals instead of an alarm budget")
    target.add_argument("--false-alarms-per-meter-month", type=_budget, metavar="K",
                        help="calibrate the threshold to K alarms per meter-month on the training history, an "
                             "alarm being a run of flags, one per started 3 h (default 4, "
                             "model_export.pipeline.DEFAULT_FALSE_ALARMS_PER_METER_MONTH)")
    t.add_argument("--name", default="gridsight-iforest", help="model name (default %(default)s)")
    t.add_argument("--version", help="model version (default: UTC timestamp)")
    t.add_argument("--n-estimators", type=positive_int, default=50,
                   help="trees (default %(default)s, model_export.pipeline.DEFAULT_N_ESTIMATORS)")
    t.add_argument("--max-samples", type=_max_samples,
                   help="rows per tree (default 512, model_export.pipeline.DEFAULT_MAX_SAMPLES; capped at the training rows)")
    t.add_argument("--interval-s", type=positive_int,
                   help="interval length in seconds (default: inferred from the data's spacing: 900, 1800, 3600...)")
    t.add_argument("--features", type=_feature_list, default=None, metavar="A,B,C",
                   help="comma-separated feature names (default: edge_agent.features.DEFAULT_FEATURES; "
                        "'gridsight model features' lists them all)")
    t.add_argument("--timezone", default="UTC", metavar="ZONE",
                   help="the site's IANA time zone for time-of-day and day-type features (default %(default)s; "
                        "times without a zone in the file are read as UTC, so local times without a zone "
                        "train correctly with the default)")
    t.add_argument("--holiday-country", metavar="CC",
                   help="ISO country code (optionally CC-SUBDIV) whose public holidays count as Sundays (default: none)")
    t.add_argument("--meter-class", help="train only on meters of this class (needs a meter_class column)")
    t.add_argument("--by-class", action="store_true", help="train one model per meter class into --out DIR")
    t.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")

    v = sub.add_parser("verify", help="check a model file: metadata, self-test, parity, signature",
                       description="Load a model as the gateway does (metadata, self-test), re-evaluate its "
                                   "trees independently in numpy and compare scores and labels (tolerance "
                                   "1e-5), and check its signature when --public-key is given. Exit 1 on failure.")
    v.add_argument("model", type=Path, help="model .onnx file")
    v.add_argument("--readings", type=Path, help="also check parity on features of this readings CSV")
    v.add_argument("--public-key", type=Path, help="Ed25519 public key PEM; checks MODEL.sig (or --signature)")
    v.add_argument("--signature", type=Path, help="signature file (default MODEL.sig)")

    s = sub.add_parser("score", help="score a readings CSV through the edge feature and scoring code",
                       description="Score every meter-interval of a readings CSV with exactly the gateway's "
                                   "feature and scoring code; write one CSV row per meter-interval. "
                                   "GRIDSIGHT_SCORER=numpy|onnxruntime|auto picks the evaluator as on a gateway "
                                   "(default auto: onnxruntime when installed).")
    s.add_argument("--model", required=True, type=Path, help="model .onnx file")
    s.add_argument("--readings", required=True, type=Path, help="readings file (CSV, or Parquet by its .parquet suffix)")
    s.add_argument("--out", required=True, type=Path,
                   help="output CSV: meter_id,interval_start,interval_s,kwh,readings,score,anomalous,reason, "
                        "then one column per model feature")

    e = sub.add_parser("evaluate", help="precision, recall and ROC-AUC of a model against labelled events",
                       description="Score a readings CSV like 'score' does and compare with ground-truth labels "
                                   "(CSV meter_id,start,end,kind, as 'gridsight sim history --labels' writes). "
                                   "Prints one JSON object.")
    e.add_argument("--model", required=True, type=Path, help="model .onnx file")
    e.add_argument("--readings", required=True, type=Path, help="readings file (CSV, or Parquet by its .parquet suffix)")
    e.add_argument("--labels", required=True, type=Path, help="labels CSV file")

    sub.add_parser("features", help="list the features a model can use, the default set marked",
                   description="Print every feature name with what it measures; '*' marks the default set.")

    k = sub.add_parser("keygen", help="create an Ed25519 signing key pair (PEM)")
    k.add_argument("--private-key", required=True, type=Path, help="private key file to create (mode 0600)")
    k.add_argument("--public-key", required=True, type=Path, help="public key file to create (pin it on gateways)")

    g = sub.add_parser("sign", help="sign a model file with an Ed25519 private key",
                       description="Write MODEL.sig: the raw 64-byte Ed25519 signature of the model file.")
    g.add_argument("model", type=Path, help="model .onnx file")
    g.add_argument("--private-key", required=True, type=Path, help="Ed25519 private key PEM")
    g.add_argument("--out", type=Path, help="signature file (default MODEL.sig)")

    p = sub.add_parser("publish", help="upload model + signature + manifest, register it, announce it",
                       description="Upload the model, its signature and a manifest to models/{name}/{version}/ "
                                   "in an object store (S3 or a directory), register the version in the "
                                   "collector database, and publish a retained model announcement over MQTT.")
    p.add_argument("model", type=Path, help="model .onnx file (signed: MODEL.sig must exist)")
    p.add_argument("--signature", type=Path, help="signature file (default MODEL.sig)")
    p.add_argument("--public-key", type=Path, help="check the signature against this key before uploading")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--store-dir", type=Path, help="local directory object store")
    where.add_argument("--s3-bucket", help="S3 bucket (endpoint from --s3-endpoint-url or AWS defaults)")
    p.add_argument("--s3-endpoint-url", help="S3-protocol endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--base-url", help="URL gateways fetch objects from (default: file:// for a directory, "
                                      "a 7-day presigned URL for S3)")
    p.add_argument("--database-url", help="collector PostgreSQL: register the version in model_versions")
    p.add_argument("--mqtt-url", help="broker (mqtts://host:8883 or mqtt://host:port) to publish the retained "
                                      "announcement on; reached before anything is uploaded")
    p.add_argument("--ca-file", type=Path, help="CA the broker's certificate must chain to (default: system CAs)")
    p.add_argument("--cert-file", type=Path, help="client certificate for mutual TLS (the shipped broker "
                                                  "config requires one), e.g. fleet/broker/collector/client.crt")
    p.add_argument("--key-file", type=Path, help="the client certificate's key")
    p.add_argument("--mqtt-username", help="broker account (default: none, or user@ in --mqtt-url)")
    p.add_argument("--mqtt-password-file", type=Path,
                   help="file holding the broker password (default: $MQTT_PASSWORD_FILE, then $MQTT_PASSWORD)")
    p.add_argument("--gateways", help="comma-separated canary gateway ids (default: the whole fleet)")

    r = sub.add_parser("rollback", help="announce a signed rollback to an older, already published version",
                       description="Gateways only move to newer model versions. This announces MODEL (published "
                                   "before) with a rollback signed by the model key for exactly one step: "
                                   "gateways running --from go back to MODEL's version; others ignore it.")
    r.add_argument("model", type=Path, help="the older model .onnx file, as published")
    r.add_argument("--private-key", type=Path, required=True, help="the Ed25519 model signing key (PEM)")
    r.add_argument("--from", dest="rollback_from", required=True, metavar="VERSION",
                   help="the version being rolled back (only gateways running it move)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--store-dir", type=Path, help="local directory object store the model was published to")
    where.add_argument("--s3-bucket", help="S3 bucket the model was published to")
    r.add_argument("--s3-endpoint-url", help="S3-protocol endpoint, e.g. http://127.0.0.1:9000")
    r.add_argument("--base-url", help="URL gateways fetch objects from (as for publish)")
    r.add_argument("--mqtt-url", required=True, help="broker to publish the retained announcement on")
    r.add_argument("--ca-file", type=Path, help="CA the broker's certificate must chain to (default: system CAs)")
    r.add_argument("--cert-file", type=Path, help="client certificate for mutual TLS")
    r.add_argument("--key-file", type=Path, help="the client certificate's key")
    r.add_argument("--mqtt-username", help="broker account (default: none, or user@ in --mqtt-url)")
    r.add_argument("--mqtt-password-file", type=Path,
                   help="file holding the broker password (default: $MQTT_PASSWORD_FILE, then $MQTT_PASSWORD)")
    r.add_argument("--gateways", help="comma-separated gateway ids (default: the whole fleet)")
    return explain_defaults(parser)


def _train(ns: argparse.Namespace) -> int:
    from edge_agent.features import DEFAULT_FEATURES
    from model_export.pipeline import DEFAULT_MAX_SAMPLES, TrainingError, train_and_export
    from model_export.readings import ReadingsError
    from model_export.sources import SourceError

    try:
        table = _training_table(ns)
        classes = [ns.meter_class]
        if ns.by_class:
            classes = sorted(set(table.meter_classes.values()))
            if not classes:
                raise CLIError("--by-class needs a meter_class column in the readings")
            ns.out.mkdir(parents=True, exist_ok=True)
        for meter_class in classes:
            out = ns.out / f"{ns.name}-{meter_class}.onnx" if ns.by_class else ns.out
            name = f"{ns.name}-{meter_class}" if ns.by_class else ns.name
            _progress(f"training {name} on {len(table)} rows" + (f" (class {meter_class})" if meter_class else ""))
            result = train_and_export(table, out, name=name, version=ns.version, contamination=ns.contamination,
                                      false_alarms_per_meter_month=ns.false_alarms_per_meter_month,
                                      n_estimators=ns.n_estimators,
                                      max_samples=DEFAULT_MAX_SAMPLES if ns.max_samples is None else ns.max_samples,
                                      interval_s=ns.interval_s, meter_class=meter_class, random_state=ns.seed,
                                      feature_names=ns.features or DEFAULT_FEATURES, time_zone=ns.timezone,
                                      holiday_country=ns.holiday_country)
            if result.features_left_out:
                _progress(f"left out (no data behind them in this training set): {', '.join(result.features_left_out)}")
            _progress(f"{name}: {result.interval_s} s intervals, calibrated to {result.metadata['calibration']}; "
                      f"expected flags per meter-month on data like the training data: "
                      f"{result.expected_flags_per_meter_month:.2f}")
            print(json.dumps({"model": str(result.path), "name": result.name, "version": result.version,
                              "meter_class": result.meter_class, "training_rows": result.rows,
                              "interval_s": result.interval_s, "features": list(result.feature_names),
                              "features_left_out": list(result.features_left_out),
                              "expected_flags_per_meter_month": round(result.expected_flags_per_meter_month, 3),
                              "contamination": result.contamination,
                              "parity_max_abs_diff": result.parity_max_abs_diff,
                              "data_quality": result.quality.as_dict()}))
    except (ReadingsError, TrainingError, SourceError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _training_table(ns: argparse.Namespace):
    """The training readings from whichever source the command line names."""
    from model_export.readings import read_readings
    from model_export.sources import read_meter_classes, table_from_archive, table_from_database

    classes = read_meter_classes(ns.meter_classes) if ns.meter_classes else None
    if ns.readings is not None:
        _progress(f"reading {ns.readings}")
        table = read_readings(ns.readings)
        if classes:
            table.meter_classes.update(classes)
        return table
    day = 86_400
    if ns.database_url:
        since = None if ns.since is None else dt.datetime.combine(ns.since, dt.time(), dt.timezone.utc).timestamp()
        until = None if ns.until is None else \
            dt.datetime.combine(ns.until, dt.time(), dt.timezone.utc).timestamp() + day
        return table_from_database(ns.database_url, since, until, classes, progress=_progress)
    if ns.since is None or ns.until is None:
        raise CLIError("training on the archive needs --since and --until (UTC days)")
    from gridsight.archive_format import LocalDirStore, S3Store

    store = LocalDirStore(ns.archive_dir) if ns.archive_dir else S3Store(ns.s3_endpoint_url, ns.archive_s3_bucket)
    return table_from_archive(store, ns.since, ns.until, classes, progress=_progress)


def _verify(ns: argparse.Namespace) -> int:
    from model_export.verify import VerificationError, verify_model_file

    try:
        report = verify_model_file(ns.model, readings=ns.readings, public_key=ns.public_key,
                                   signature=ns.signature)
    except VerificationError as exc:
        raise CLIError(f"{ns.model}: FAILED: {exc}", code=1) from None
    print(json.dumps(report))
    return 0


def _score(ns: argparse.Namespace) -> int:
    from edge_agent.scorer import ModelError, Scorer
    from model_export.offline import score_readings
    from model_export.readings import ReadingsError

    from model_export.pipeline import TrainingError

    try:
        scorer = Scorer.load(ns.model)
        _progress(f"scoring with {scorer.name} {scorer.version} on the {scorer.kind} scorer")
        rows = score_readings(scorer, ns.readings, progress=_progress)
    except (ModelError, ReadingsError, TrainingError) as exc:
        raise CLIError(str(exc)) from None
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    flagged = 0
    with ns.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["meter_id", "interval_start", "interval_s", "kwh", "readings", "score", "anomalous", "reason",
                         *scorer.feature_names])
        for r in rows:
            flagged += r.anomalous
            writer.writerow([r.meter_id, r.interval_start_iso, r.interval_s, f"{r.kwh:.6g}", r.readings,
                             f"{r.score:.6f}", int(r.anomalous), r.reason or "", *(f"{v:.4g}" for v in r.features)])
    _progress(f"wrote {len(rows)} meter-intervals ({flagged} flagged) to {ns.out}")
    return 0


def _evaluate(ns: argparse.Namespace) -> int:
    from edge_agent.scorer import ModelError, Scorer
    from model_export.evaluate import evaluate, read_labels
    from model_export.offline import score_readings
    from model_export.readings import ReadingsError

    from model_export.pipeline import TrainingError

    try:
        scorer = Scorer.load(ns.model)
        events = read_labels(ns.labels)
        scored = score_readings(scorer, ns.readings, progress=_progress)
    except (ModelError, ReadingsError, TrainingError) as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps({"model": str(ns.model), "version": scorer.version, **evaluate(scored, events).as_dict()}))
    return 0


def _features(ns: argparse.Namespace) -> int:
    from edge_agent.features import DEFAULT_FEATURES, FEATURE_DESCRIPTIONS

    for name, text in FEATURE_DESCRIPTIONS.items():
        print(f"{'*' if name in DEFAULT_FEATURES else ' '} {name:26s} {text}")
    return 0


def _keygen(ns: argparse.Namespace) -> int:
    from model_export.signing import generate_keypair

    try:
        generate_keypair(ns.private_key, ns.public_key)
    except FileExistsError:
        raise CLIError(f"{ns.private_key} already exists; refusing to overwrite a signing key") from None
    _progress(f"wrote {ns.private_key} (keep it secret) and {ns.public_key} (pin it on gateways)")
    return 0


def _sign(ns: argparse.Namespace) -> int:
    from model_export.signing import SigningError, sign_file

    try:
        out = sign_file(ns.model, ns.private_key, ns.out)
    except SigningError as exc:
        raise CLIError(str(exc)) from None
    _progress(f"wrote {out}")
    return 0


def _publish(ns: argparse.Namespace) -> int:
    from gridsight.mqtt import MqttSetupError, TlsFiles, read_password
    from model_export.publish import PublishError, publish_model

    try:
        tls = TlsFiles(*(str(p) if p else None for p in (ns.ca_file, ns.cert_file, ns.key_file)))
        password = read_password(None, ns.mqtt_password_file) if ns.mqtt_url else None
    except MqttSetupError as exc:
        raise CLIError(str(exc)) from None
    try:
        result = publish_model(
            ns.model, signature=ns.signature, public_key=ns.public_key, store_dir=ns.store_dir,
            s3_bucket=ns.s3_bucket, s3_endpoint_url=ns.s3_endpoint_url, base_url=ns.base_url,
            database_url=ns.database_url, mqtt_url=ns.mqtt_url, mqtt_username=ns.mqtt_username,
            mqtt_password=password, mqtt_tls=tls,
            gateways=[g.strip() for g in ns.gateways.split(",") if g.strip()] if ns.gateways else None,
            progress=_progress)
    except PublishError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(result))
    return 0


def _rollback(ns: argparse.Namespace) -> int:
    from gridsight.mqtt import MqttSetupError, TlsFiles, read_password
    from model_export.publish import PublishError, announce_rollback

    try:
        tls = TlsFiles(*(str(p) if p else None for p in (ns.ca_file, ns.cert_file, ns.key_file)))
        password = read_password(None, ns.mqtt_password_file)
    except MqttSetupError as exc:
        raise CLIError(str(exc)) from None
    try:
        result = announce_rollback(
            ns.model, ns.private_key, ns.rollback_from, store_dir=ns.store_dir, s3_bucket=ns.s3_bucket,
            s3_endpoint_url=ns.s3_endpoint_url, base_url=ns.base_url, mqtt_url=ns.mqtt_url,
            mqtt_username=ns.mqtt_username, mqtt_password=password, mqtt_tls=tls,
            gateways=[g.strip() for g in ns.gateways.split(",") if g.strip()] if ns.gateways else None)
    except PublishError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(result))
    return 0


_COMMANDS = {"features": _features, "train": _train, "verify": _verify, "score": _score, "evaluate": _evaluate, "keygen": _keygen,
             "sign": _sign, "publish": _publish, "rollback": _rollback}


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_cli(lambda: _COMMANDS[ns.command](ns), f"{PROG} {ns.command}")
