#!/usr/bin/env bash
# Production setup of gridsight, step by step: broker, collector, gateways, models.
#
# Run a step with:  bash production.sh STEP [ARGS]   (as root where it installs system files)
# Steps, in order:  fleet | broker | collector | model VERSION | gateway GATEWAY_ID |
#                   install-gateway BUNDLE.tar.gz | publish VERSION
# docs/collector.md and docs/agent.md show this file; tests/e2e/test_production_profile.py runs
# it as is, with only the paths and ports below pointed into a sandbox (and SERVICE, which
# starts the daemons there instead of systemd).
set -euo pipefail
umask 027

# ---- where things go: the production defaults --------------------------------------------------
: "${WHEEL:=dist/gridsight-0.1.0-py3-none-any.whl}"   # python -m build  (or: pip wheel . --no-deps -w dist)
: "${TOOLS:=/opt/gridsight-tools}"        # technician's workstation: gridsight[train] (provisioning + models)
: "${FLEET:=/srv/gridsight/fleet}"        # fleet workspace with the CA key: keep it on that workstation
: "${KEYS:=/srv/gridsight/keys}"          # the model-signing key pair
: "${BROKER_HOST:=mqtt.example.net}"
: "${BROKER_PORT:=8883}"
: "${BROKER_USER:=mosquitto}"             # the user Mosquitto drops to (Debian/Ubuntu package)
: "${MOSQUITTO_CONF_D:=/etc/mosquitto/conf.d}"
: "${MOSQUITTO_FILES:=/etc/mosquitto/gridsight}"
: "${COLLECTOR_VENV:=/opt/gridsight-collector}"
: "${COLLECTOR_ETC:=/etc/gridsight-collector}"
: "${COLLECTOR_DATA:=/var/lib/gridsight-collector}"
: "${API_HOST:=127.0.0.1}"
: "${API_PORT:=8000}"
: "${DATABASE_URL:=postgresql://gridsight@db.example.net:5432/gridsight}"
: "${S3_BUCKET:=gridsight-archive}"       # S3_ENDPOINT_URL and AWS_* credentials as boto3 reads them
: "${TRAINING_READINGS:=/srv/gridsight/history.csv}"   # meter_id,ts,energy_kwh[,power_w]
: "${BUNDLES:=/srv/gridsight/bundles}"
: "${GATEWAY_PLATFORM:=manylinux2014_aarch64}"        # 64-bit Raspberry Pi OS; see docs/agent.md
: "${GATEWAY_PYTHON:=3.11}"
: "${GATEWAY_EXTRA:=edge}"                # edge: numpy scorer; edge-onnx: onnxruntime too, where it has wheels
: "${GATEWAY_ETC:=/etc/gridsight}"        # on the gateway
: "${GATEWAY_DATA:=/var/lib/gridsight}"
: "${GATEWAY_VENV:=/opt/gridsight}"
: "${SYSTEMD_DIR:=/etc/systemd/system}"
: "${TECHNICIAN_KEY_FILE:=/srv/gridsight/technician.key}"   # the collector step makes it; the technician keeps it
: "${METER_ARGS:=--type modbus_tcp --register-map sdm630 --option host=10.0.0.5 --option unit=1}"
: "${SERVICE:=systemctl}"                 # 'SERVICE start UNIT'

gs="$TOOLS/bin/gridsight"

case "${1:-}" in
fleet)        # workstation: fleet CA, the broker's certificate, the collector's broker account
  [ -x "$gs" ] || { python3 -m venv "$TOOLS"; "$TOOLS/bin/pip" install "$WHEEL[train]"; }
  "$gs" provision ca init --fleet "$FLEET"
  "$gs" provision ca server-cert --fleet "$FLEET" --host "$BROKER_HOST"
  "$gs" provision collector-account --fleet "$FLEET" --username collector
  # publishing models gets an account of its own: the broker binds client ids to accounts, so a
  # publish logged in as 'collector' would take over the running collector's session
  "$gs" provision collector-account --fleet "$FLEET" --username model-publisher
  ;;
broker)       # broker host (Mosquitto 2 installed): the shipped config and the fleet's files
  "$gs" provision deploy-files --out "$FLEET/deploy"
  sed "s/^listener 8883$/listener $BROKER_PORT/" "$FLEET/deploy/gridsight.conf" \
      | sed "s#/etc/mosquitto/gridsight/#$MOSQUITTO_FILES/#" > "$MOSQUITTO_CONF_D/gridsight.conf"
  # readable by the broker's own user, by nobody else; rerun after each 'provision gateway'
  "$gs" provision broker-files --fleet "$FLEET" --dest "$MOSQUITTO_FILES" --owner "$BROKER_USER"
  $SERVICE restart mosquitto
  ;;
collector)    # collector host: client certificate + password for the broker, secrets, schema, first admin
  [ -x "$COLLECTOR_VENV/bin/gridsight" ] || {
    python3 -m venv "$COLLECTOR_VENV"; "$COLLECTOR_VENV/bin/pip" install "$WHEEL[collector]"; }
  install -d -m 0750 "$COLLECTOR_ETC" "$COLLECTOR_DATA"
  cp "$FLEET/ca/ca.crt" "$FLEET/broker/collector/client.crt" "$FLEET/broker/collector/client.key" \
     "$FLEET/broker/collector.password" "$COLLECTOR_ETC/"
  "$COLLECTOR_VENV/bin/python" -c "import os,base64; print(base64.b64encode(os.urandom(32)).decode())" \
      > "$COLLECTOR_ETC/master.key"
  "$COLLECTOR_VENV/bin/python" -c "import secrets; print(secrets.token_urlsafe(48))" > "$COLLECTOR_ETC/jwt.secret"
  cat > "$COLLECTOR_ETC/collector.env" <<EOF
DATABASE_URL=$DATABASE_URL
MQTT_URL=mqtts://$BROKER_HOST:$BROKER_PORT
MQTT_USERNAME=collector
MQTT_PASSWORD_FILE=$COLLECTOR_ETC/collector.password
GRIDSIGHT_COLLECTOR_MQTT_CA_FILE=$COLLECTOR_ETC/ca.crt
GRIDSIGHT_COLLECTOR_MQTT_CERT_FILE=$COLLECTOR_ETC/client.crt
GRIDSIGHT_COLLECTOR_MQTT_KEY_FILE=$COLLECTOR_ETC/client.key
GRIDSIGHT_COLLECTOR_DATA_DIR=$COLLECTOR_DATA
GRIDSIGHT_COLLECTOR_API_HOST=$API_HOST
GRIDSIGHT_COLLECTOR_API_PORT=$API_PORT
GRIDSIGHT_MASTER_KEY_FILE=$COLLECTOR_ETC/master.key
GRIDSIGHT_JWT_SECRET_FILE=$COLLECTOR_ETC/jwt.secret
S3_BUCKET=$S3_BUCKET
${S3_ENDPOINT_URL:+S3_ENDPOINT_URL=$S3_ENDPOINT_URL}
EOF
  set -a; . "$COLLECTOR_ETC/collector.env"; set +a
  "$COLLECTOR_VENV/bin/gridsight" collector migrate
  "$COLLECTOR_VENV/bin/python" -c "import secrets; print(secrets.token_urlsafe(18))" > "$COLLECTOR_ETC/admin.password"
  "$COLLECTOR_VENV/bin/gridsight" accounts create-user admin --role admin --password-file "$COLLECTOR_ETC/admin.password"
  "$COLLECTOR_VENV/bin/gridsight" accounts create-api-key field-laptop --role technician > "$TECHNICIAN_KEY_FILE"
  "$COLLECTOR_VENV/bin/gridsight" provision deploy-files --out "$COLLECTOR_ETC/deploy"
  install -m 0644 "$COLLECTOR_ETC/deploy/gridsight-collector.service" "$SYSTEMD_DIR/"
  $SERVICE start gridsight-collector      # gridsight collector serve, with collector.env
  ;;
model)        # workstation: train, sign (the key pair is made once)
  version=$2
  [ -f "$KEYS/signing.key" ] || { install -d -m 0700 "$KEYS"
    "$gs" model keygen --private-key "$KEYS/signing.key" --public-key "$KEYS/signing.pub.pem"; }
  "$gs" model train --readings "$TRAINING_READINGS" --out "$KEYS/model-$version.onnx" --version "$version"
  "$gs" model sign "$KEYS/model-$version.onnx" --private-key "$KEYS/signing.key"
  ;;
gateway)      # workstation: identity, meters, enrollment token, offline wheelhouse, bundle
  id=$2
  "$gs" provision gateway "$id" --fleet "$FLEET" --broker "mqtts://$BROKER_HOST:$BROKER_PORT"
  # shellcheck disable=SC2086  # METER_ARGS is a list of options
  "$gs" provision bind-meter "$id" --fleet "$FLEET" --meter-id "$id-m1" $METER_ARGS
  "$gs" provision broker-files --fleet "$FLEET" --dest "$MOSQUITTO_FILES" --owner "$BROKER_USER"
  $SERVICE reload mosquitto              # the new account and ACL, without dropping sessions
  GRIDSIGHT_API_KEY=$(cat "$TECHNICIAN_KEY_FILE") "$gs" provision enroll-token "$id" \
      --api "http://$API_HOST:$API_PORT" --out "$BUNDLES/$id.token"
  "$gs" provision wheelhouse --wheel "$WHEEL" --out "$BUNDLES/$id-wheelhouse" \
      --platform "$GATEWAY_PLATFORM" --python-version "$GATEWAY_PYTHON" --extra "$GATEWAY_EXTRA"
  first=$(ls "$KEYS"/model-*.onnx | head -n 1)
  "$gs" provision bundle "$id" --fleet "$FLEET" --out "$BUNDLES/$id" --install-dir "$GATEWAY_ETC" \
      --data-dir "$GATEWAY_DATA" --model "$first" --model-public-key "$KEYS/signing.pub.pem" \
      --enroll-token-file "$BUNDLES/$id.token" --wheelhouse "$BUNDLES/$id-wheelhouse"
  ;;
install-gateway)   # on the gateway, offline: the bundle's wheelhouse, enrollment, doctor, service
  tarball=$2
  install -d -m 0750 "$GATEWAY_ETC"
  tar -xzf "$tarball" --same-owner -C "$GATEWAY_ETC" --strip-components=1
  python3 "$GATEWAY_ETC/wheelhouse/install.py" "$GATEWAY_VENV"
  "$GATEWAY_VENV/bin/gridsight" provision enroll --api "http://$API_HOST:$API_PORT" --config "$GATEWAY_ETC/agent.toml"
  "$GATEWAY_VENV/bin/gridsight" provision doctor --config "$GATEWAY_ETC/agent.toml"
  install -m 0644 "$GATEWAY_ETC/gridsight-agent.service" "$SYSTEMD_DIR/"
  $SERVICE start gridsight-agent
  ;;
publish)      # workstation: upload, register and announce a signed model over mutual TLS
  version=$2
  "$gs" model publish "$KEYS/model-$version.onnx" --public-key "$KEYS/signing.pub.pem" \
      --s3-bucket "$S3_BUCKET" ${S3_ENDPOINT_URL:+--s3-endpoint-url "$S3_ENDPOINT_URL"} --database-url "$DATABASE_URL" --mqtt-url "mqtts://$BROKER_HOST:$BROKER_PORT" \
      --ca-file "$FLEET/ca/ca.crt" --cert-file "$FLEET/broker/model-publisher/client.crt" \
      --key-file "$FLEET/broker/model-publisher/client.key" --mqtt-username model-publisher \
      --mqtt-password-file "$FLEET/broker/model-publisher.password"
  ;;
*)
  echo "usage: production.sh fleet|broker|collector|model V|gateway ID|install-gateway TARBALL|publish V" >&2
  exit 2
  ;;
esac
