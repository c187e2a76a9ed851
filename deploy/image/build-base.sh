#!/usr/bin/env bash
# Builds the base image `cachew-base:bookworm` without any registry: a minimal Debian bookworm
# root file system made by debootstrap (--variant=minbase) from Debian's mirror, plus
# ca-certificates and curl (the Kubernetes scale command and the health checks use curl), with
# docs, man pages, locales and apt lists removed, then `docker import`ed.
#
# Usage: deploy/image/build-base.sh [--force]
#   Skips the build when the image already exists; --force rebuilds it.
# Environment: CACHEW_BASE_IMAGE (default cachew-base:bookworm),
#              DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs root (debootstrap chroots) and a running Docker Engine. Installs debootstrap with apt-get
# when it is missing.
set -euo pipefail

image=${CACHEW_BASE_IMAGE:-cachew-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-base.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null 2>&1; then
  echo "build-base.sh: error: docker is not installed" >&2
  exit 1
fi
if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-base.sh: $image exists (use --force to rebuild)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "build-base.sh: error: debootstrap needs root" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base.sh: installing debootstrap with apt-get"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) >/dev/null \
    || { echo "build-base.sh: error: debootstrap is missing and apt-get could not install it" >&2; exit 1; }
fi

root=$(mktemp -d /tmp/cachew-base.XXXXXX)
cleanup() {
  # debootstrap may leave /proc or /sys mounted in the root after a failure.
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m" || true; fi
  done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

started=$(date +%s)
echo "build-base.sh: debootstrap bookworm (minbase) into $root from $mirror"
debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$root" "$mirror" \
  >"$root.log" 2>&1 || { tail -30 "$root.log" >&2; rm -f "$root.log"; echo "build-base.sh: error: debootstrap failed" >&2; exit 1; }
rm -f "$root.log"

# Strip what a container never reads: package caches and lists, docs, man pages, locales, logs.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/tmp/* "$root"/var/tmp/*
# Keep apt from fetching them back into an image built FROM this one.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
  >"$root/etc/dpkg/dpkg.cfg.d/01-cachew-nodoc"

tar --numeric-owner -C "$root" -c . \
  | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      --message "debootstrap --variant=minbase bookworm + ca-certificates curl" \
      - "$image" >/dev/null
size=$(docker image inspect "$image" --format '{{.Size}}')
echo "build-base.sh: built $image ($((size / 1000000)) MB) in $(( $(date +%s) - started )) s"
