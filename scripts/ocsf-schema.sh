#!/bin/sh
# Regenerate the JSON Schema (draft 2020-12) of the OCSF "Detection Finding"
# event class (class_uid 2004) used by the tests.
#
# Source: the PyPI package ocsf-json-schema 1.2.0 (MIT, github.com/nsmithuk/ocsf-json-schema),
# which bundles the official OCSF schema exports (schema.ocsf.io/<ver>/export/schema)
# for OCSF 1.0.0-rc.2 .. 1.8.0 and turns a class into a JSON Schema with every
# referenced object embedded under $defs. We use OCSF 1.8.0, no profiles (the base
# class, as at schema.ocsf.io/schema/1.8.0/classes/detection_finding).
#
# Usage: scripts/ocsf-schema.sh [OUT]   (default: tests/ocsf/detection_finding.schema.json)
# Needs python3 (>= 3.10) with venv and pip, and PyPI access (only for the pip install).
set -eu

PKG=ocsf-json-schema
PKG_VERSION=1.2.0
# sha256 of ocsf_json_schema-1.2.0-py3-none-any.whl on PyPI
PKG_SHA256=64d819042d20c3c04bc0d024c7c47c41006ebbe0209ce768ba6efa1240106708
OCSF_VERSION=1.8.0
CLASS_UID=2004

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-"$ROOT/tests/ocsf/detection_finding.schema.json"}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM

"${PYTHON:-python3}" -m venv "$TMP/venv"
printf '%s==%s --hash=sha256:%s\n' "$PKG" "$PKG_VERSION" "$PKG_SHA256" >"$TMP/req.txt"
"$TMP/venv/bin/pip" install --quiet --disable-pip-version-check \
    --only-binary :all: --require-hashes -r "$TMP/req.txt"

mkdir -p "$(dirname "$OUT")"
"$TMP/venv/bin/python" - "$OCSF_VERSION" "$CLASS_UID" >"$TMP/schema.json" <<'EOF'
import json, sys
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

version, class_uid = sys.argv[1], int(sys.argv[2])
ocsf = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
schema = ocsf.get_class_schema(ocsf.lookup_class_name_from_uid(class_uid), profiles=[])
json.dump(schema, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
sys.stdout.write("\n")
EOF
mv "$TMP/schema.json" "$OUT"
echo "wrote $OUT (OCSF $OCSF_VERSION, class_uid $CLASS_UID, $PKG $PKG_VERSION)"
