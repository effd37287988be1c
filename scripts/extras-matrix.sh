#!/usr/bin/env bash
# Each extra installed alone: for every extra a fresh venv gets the wheel of this checkout with
# only that extra, runs its roles' `--help` and one smoke command per role, and checks that a
# role whose extra is missing says so in one line and exits 2.
#
#   scripts/extras-matrix.sh [EXTRA ...]        (default: edge edge-onnx collector train sim tableau)
#
# WORK_DIR (default .gridsight/extras-matrix) holds the venvs; pip's cache and the machine's
# wheel mirrors make a rerun fast. Exit 0 when every check passed; the failures are listed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
WORK=${WORK_DIR:-$REPO/.gridsight/extras-matrix}
EXTRAS=("$@")
[ ${#EXTRAS[@]} -gt 0 ] || EXTRAS=(edge edge-onnx collector train sim tableau)
FAILED=()
unset PYTHONPATH VIRTUAL_ENV DATABASE_URL MQTT_URL S3_BUCKET S3_ENDPOINT_URL

say() { printf '%s\n' "$*" >&2; }
fail() { FAILED+=("$1"); say "FAIL $1"; }

# expect_ok NAME CMD...: the command exits 0
expect_ok() {
    local name=$1; shift
    if (cd "$RUN" && "$@") >"$RUN/out.log" 2>"$RUN/err.log"; then
        say "ok   $EXTRA: $name"
    else
        fail "$EXTRA: $name (exit $?): $(tail -c 600 "$RUN/err.log")"
    fi
}

# expect_needs ROLE EXTRA CMD...: exit 2 and exactly the one-line 'needs the [EXTRA] extra' message
expect_needs() {
    local role=$1 extra=$2; shift 2
    local want="gridsight $role: needs the [$extra] extra: pip install 'gridsight[$extra]'"
    (cd "$RUN" && "$@") >"$RUN/out.log" 2>"$RUN/err.log"
    local code=$?
    if [ $code -eq 2 ] && [ "$(cat "$RUN/err.log")" = "$want" ]; then
        say "ok   $EXTRA: 'gridsight ${*:2}' says it needs [$extra]"
    else
        fail "$EXTRA: '$*' should print '$want' and exit 2; exit $code: $(tail -c 600 "$RUN/err.log")"
    fi
}

# expect_absent MODULE: the venv does not have MODULE (an extra must not drag it in)
expect_absent() {
    if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is not None)"; then
        say "ok   $EXTRA: $1 is not installed"
    else
        fail "$EXTRA: $1 is installed but no role of [$EXTRA] needs it"
    fi
}

mkdir -p "$WORK"
say "building the wheel of $REPO (its tracked and new files, as they are now)"
rm -rf "$WORK/dist" "$WORK/src"
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c '[ -f "{}" ] && printf "%s\0" "{}"' \
    | tar --null -cf - -T - | tar -xf - -C "$WORK/src"
[ -d "$WORK/build-venv" ] || "$PYTHON" -m venv "$WORK/build-venv"
if ! "$WORK/build-venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1; then
    cat "$WORK/wheel.log" >&2
    exit 1
fi
WHEEL=$(ls "$WORK"/dist/gridsight-*.whl)

for EXTRA in "${EXTRAS[@]}"; do
    start=$SECONDS
    VENV=$WORK/venv-$EXTRA
    RUN=$WORK/run-$EXTRA
    rm -rf "$VENV" "$RUN"
    mkdir -p "$RUN"
    G=$VENV/bin/gridsight
    say "== [$EXTRA]: fresh venv"
    "$PYTHON" -m venv "$VENV"
    if ! "$VENV/bin/pip" install --quiet "$WHEEL[$EXTRA]" >"$RUN/pip.log" 2>&1; then
        fail "$EXTRA: pip install: $(tail -c 1500 "$RUN/pip.log")"
        continue
    fi
    say "     installed in $((SECONDS - start)) s"
    expect_ok "gridsight --version" "$G" --version
    case $EXTRA in
    edge)
        for role in agent provision schema; do expect_ok "$role --help" "$G" $role --help; done
        printf 'meter_id,ts,energy_kwh\nm-1,1767225600,10.0\nm-1,1767225660,10.01\n' >"$RUN/meter.csv"
        printf 'gateway_id = "gw-matrix"\ndata_dir = "%s"\n[[readers]]\ntype = "replay"\npath = "%s"\n' \
            "$RUN/agent" "$RUN/meter.csv" >"$RUN/agent.toml"
        expect_ok "agent check-config (replay reader found through the installed entry points)" \
            "$G" agent check-config --config "$RUN/agent.toml"
        expect_ok "provision ca init" "$G" provision ca init --fleet "$RUN/fleet"
        expect_ok "schema --out" "$G" schema --out "$RUN/schema"
        expect_needs collector collector "$G" collector status
        expect_needs model train "$G" model train --readings "$RUN/meter.csv" --out "$RUN/m.onnx"
        expect_needs sim sim "$G" sim serve modbus --help
        expect_needs dashboards tableau "$G" dashboards validate
        for module in onnxruntime fastapi sklearn prophet; do expect_absent $module; done
        ;;
    edge-onnx)
        expect_ok "agent --help" "$G" agent --help
        expect_ok "onnxruntime is installed" "$VENV/bin/python" -c "import onnxruntime"
        expect_absent fastapi
        ;;
    collector)
        for role in collector accounts; do expect_ok "$role --help" "$G" $role --help; done
        expect_ok "collector migrate (embedded PostgreSQL)" \
            env GRIDSIGHT_DATA_DIR="$RUN/collector" "$G" collector migrate
        expect_needs model train "$G" model train --readings "$RUN/none.csv" --out "$RUN/m.onnx"
        for module in onnxruntime pymodbus serial sklearn; do expect_absent $module; done
        ;;
    train)
        expect_ok "model --help" "$G" model --help
        "$VENV/bin/python" - "$RUN/readings.csv" <<'EOF'
import csv, math, sys
with open(sys.argv[1], "w", newline="") as fh:
    out = csv.writer(fh)
    out.writerow(["meter_id", "ts", "kwh"])
    start = 1767225600  # 2026-01-01 00:00 UTC
    for meter in range(3):
        for i in range(14 * 96):
            hour = (i % 96) / 4
            out.writerow([f"m-{meter}", start + i * 900,
                          round(0.1 + 0.05 * meter + 0.08 * (1 + math.sin((hour - 7) / 24 * 2 * math.pi)), 4)])
EOF
        expect_ok "model train" "$G" model train --readings "$RUN/readings.csv" --out "$RUN/model.onnx" \
            --n-estimators 10 --max-samples 64
        expect_ok "model keygen" "$G" model keygen --private-key "$RUN/k.pem" --public-key "$RUN/k.pub"
        expect_ok "model verify" "$G" model verify "$RUN/model.onnx"
        expect_absent fastapi
        ;;
    sim)
        expect_ok "sim --help" "$G" sim --help
        expect_ok "sim history" "$G" sim history --gateways 1 --meters-per-gateway 2 \
            --start 2026-01-05T00:00:00Z --days 1 --out "$RUN/history.csv" --labels "$RUN/labels.csv"
        expect_ok "sim fleet --help" "$G" sim fleet --help
        ;;
    tableau)
        expect_ok "dashboards --help" "$G" dashboards --help
        expect_ok "dashboards validate (the shipped workbooks)" "$G" dashboards validate
        ;;
    *)
        fail "$EXTRA: no checks written for this extra"
        ;;
    esac
    say "     [$EXTRA] took $((SECONDS - start)) s"
done

if [ ${#FAILED[@]} -gt 0 ]; then
    say ""
    say "extras matrix: ${#FAILED[@]} check(s) failed:"
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi
say "extras matrix: every check passed (${EXTRAS[*]}) in $SECONDS s"
