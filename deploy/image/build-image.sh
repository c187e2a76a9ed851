#!/usr/bin/env bash
# Builds the runtime image `cachew-rs:dev` (deploy/Dockerfile) from binaries cargo built on this
# host. The host is Debian 12 bookworm, like the base image, so its glibc binaries run there.
#
# Usage: deploy/image/build-image.sh [--profile debug|release] [--bin-dir DIR] [--tag TAG]
#   --profile  which cargo profile's binaries to package (default: release). CI packages the
#              debug binaries `cargo test --workspace --no-run` already built; an operator runs
#              `cargo build --release` first.
#   --bin-dir  take the binaries from DIR instead (overrides --profile).
#   --tag      image tag (default: cachew-rs:dev, or $CACHEW_IMAGE).
# Environment: CARGO_TARGET_DIR (default ./target), CACHEW_BASE_IMAGE (default
#              cachew-base:bookworm; built by build-base.sh when missing).
#
# The build context is a temporary directory holding only what the image needs:
#   bin/cachew-{dispatcher,worker,client,fixtures,scenario}  (required)
#   bin/cachew-tui                                            (when built)
#   Dockerfile
# The binaries are stripped here, on the host, with binutils' `strip`: cargo already needs a
# linker toolchain on the host, so binutils is there, while the base image has none; installing
# binutils in a build stage would need the network during `docker build` and add a 25 MB
# layer to throw away. Debug info is most of a debug binary's size.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
profile=release
bin_dir=
tag=${CACHEW_IMAGE:-cachew-rs:dev}
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs debug or release}; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) tag=${1#--tag=}; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  debug|release) ;;
  *) echo "build-image.sh: --profile must be debug or release, not $profile" >&2; exit 2 ;;
esac

if ! command -v docker >/dev/null 2>&1; then
  echo "build-image.sh: error: docker is not installed" >&2
  exit 1
fi
base=${CACHEW_BASE_IMAGE:-cachew-base:bookworm}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  CACHEW_BASE_IMAGE=$base "$here/build-base.sh"
fi

target=${CARGO_TARGET_DIR:-$repo/target}
bins=${bin_dir:-$target/$profile}
required=(cachew-dispatcher cachew-worker cachew-client cachew-fixtures cachew-scenario)
optional=(cachew-tui)
for b in "${required[@]}"; do
  if [ ! -x "$bins/$b" ]; then
    echo "build-image.sh: error: $bins/$b is missing; build it first:" >&2
    if [ "$profile" = release ]; then
      echo "  cargo build --release --workspace --bins" >&2
    else
      echo "  cargo test --workspace --no-run   (or cargo build --workspace --bins)" >&2
    fi
    exit 1
  fi
done

started=$(date +%s)
context=$(mktemp -d /tmp/cachew-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir "$context/bin"
strip_tool=$(command -v strip || true)
if [ -z "$strip_tool" ]; then
  echo "build-image.sh: warning: no strip on this host (binutils); packaging unstripped binaries" >&2
fi
for b in "${required[@]}" "${optional[@]}"; do
  [ -x "$bins/$b" ] || continue
  if [ -n "$strip_tool" ]; then
    "$strip_tool" --strip-all -o "$context/bin/$b" "$bins/$b"
  else
    cp "$bins/$b" "$context/bin/$b"
  fi
done
cp "$repo/deploy/Dockerfile" "$context/Dockerfile"

echo "build-image.sh: building $tag from $bins (FROM $base)"
docker build --quiet --build-arg "BASE=$base" --tag "$tag" "$context" >/dev/null
size=$(docker image inspect "$tag" --format '{{.Size}}')
base_size=$(docker image inspect "$base" --format '{{.Size}}')
echo "build-image.sh: built $tag: $((size / 1000000)) MB ($((base_size / 1000000)) MB base + $(((size - base_size) / 1000000)) MB binaries) in $(( $(date +%s) - started )) s"
