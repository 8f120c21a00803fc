#!/bin/sh
# Keeps the models volume serving the model this image carries (compose's one-shot model-export service).
# The image's model is identified by a digest of everything the export reads (model/: graph code, weights
# and their manifest). When the volume's newest version came from the same digest nothing is done; otherwise
# the model is exported as the next version, which tensorflow_model_server (models.config: latest 1) loads
# while it unloads the old one. The two newest versions are kept, for a rollback by hand.
set -eu

source_dir=${MODEL_SOURCE:-/app/model}
base=${MODELS:-/models}/mask_detector
export_cmd=${MODEL_EXPORT:-python -m model.export}
keep=${MODEL_KEEP_VERSIONS:-2}

digest=$(cd "$source_dir" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort \
  | xargs sha256sum | sha256sum | cut -c1-16)
mkdir -p "$base"
versions=$(find "$base" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -exec basename {} \; | sort -n)
newest=$(echo "$versions" | tail -n 1)
if [ -n "$newest" ] && [ -f "$base/$newest/saved_model.pb" ] \
  && [ "$(cat "$base/$newest/source.sha256" 2>/dev/null || true)" = "$digest" ]; then
  echo "model-export: version $newest is this image's model ($digest)"
  exit 0
fi
next=$(( ${newest:-0} + 1 ))
echo "model-export: exporting this image's model ($digest) as version $next"
# shellcheck disable=SC2086 # export_cmd is a command line
$export_cmd --out "${MODELS:-/models}" --version "$next"
echo "$digest" > "$base/$next/source.sha256"
echo "$versions" | grep . | head -n "-$((keep - 1))" | while read -r old; do
  echo "model-export: removing version $old"
  rm -rf "${base:?}/$old"
done
