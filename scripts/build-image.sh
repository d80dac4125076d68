#!/usr/bin/env bash
# Builds the statically linked myelin binary and the images myelin:latest
# and myelin-complement:latest, without pulling anything from a registry.
# Needs Go, gcc with the static C library (Debian's libc6-dev) and a running
# Docker engine. MYELIN_IMAGE_TAG (default latest) names the tag of both, so
# that two checkouts can build and test their own images side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
tag=${MYELIN_IMAGE_TAG:-latest}
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)

mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/data"
echo "--- building the static binary ($version)"
CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo,sqlite_omit_load_extension \
    -ldflags "-s -w -X main.version=$version -linkmode external -extldflags=-static" \
    -o "$ctx/rootfs/usr/local/bin/myelin" ./cmd/myelin
# Trusted roots for outgoing federation, and a user without privileges.
cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/sbin/nologin\nmyelin:x:10001:10001:Myelin:/data:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nmyelin:x:10001:\n' > "$ctx/rootfs/etc/group"
chmod 1777 "$ctx/rootfs/tmp"
cp build/Dockerfile build/Dockerfile.complement "$ctx/"

echo "--- building myelin:$tag"
docker build -q -t "myelin:$tag" "$ctx"
echo "--- building myelin-complement:$tag"
docker build -q -t "myelin-complement:$tag" --build-arg "BASE=myelin:$tag" -f "$ctx/Dockerfile.complement" "$ctx"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^myelin(-complement)?:$tag "
