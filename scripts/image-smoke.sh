#!/usr/bin/env bash
# Smoke test of the container images (not part of `go test ./...`: it needs
# a Docker engine). It builds the images, starts myelin-complement:latest
# the way Complement does (SERVER_NAME=hs1, a throwaway CA at
# /complement/ca), waits for the health check, registers a user through
# the shared-secret endpoint, checks /_matrix/key/v2/server over HTTPS on
# 8448 against that CA, restarts the container and logs the user in again.
# Last, a second container (hs2) on the same Docker network joins a room of
# hs1 over federation, reaching it by name on port 8448.
#
#   apt-get install -y docker.io && (/usr/sbin/dockerd &) && scripts/image-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-image.sh

work=$(mktemp -d)
name=myelin-smoke-$$
net=myelin-smoke-net-$$
cleanup() {
    docker rm -f "$name" "$name-hs2" >/dev/null 2>&1 || true
    docker network rm "$net" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; docker logs "$name" 2>&1 | tail -20 >&2 || true; exit 1; }

echo "--- image size"
size=$(docker image inspect myelin:latest --format '{{.Size}}')
[ "$size" -lt $((60 * 1000 * 1000)) ] || fail "myelin:latest is $size bytes (limit 60 MB)"
echo "myelin:latest is $((size / 1000 / 1000)) MB"

echo "--- a throwaway CA for Complement"
mkdir -p "$work/ca"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=Smoke test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca/ca.key" -out "$work/ca/ca.crt" 2>/dev/null
chmod 0644 "$work/ca/ca.key" "$work/ca/ca.crt"

echo "--- starting myelin-complement:latest as hs1"
docker network create "$net" >/dev/null
docker run -d --name "$name" --network "$net" --network-alias hs1 -e SERVER_NAME=hs1 -v "$work/ca:/complement/ca:ro" \
    -p 127.0.0.1::8008 -p 127.0.0.1::8448 myelin-complement:latest >/dev/null
port() { docker port "${2:-$name}" "$1/tcp" | head -1 | sed 's/.*://'; }
wait_healthy() {
    local c=${1:-$name}
    for _ in $(seq 1 60); do
        status=$(docker inspect --format '{{.State.Health.Status}}' "$c" 2>/dev/null || echo none)
        [ "$status" = healthy ] && return 0
        [ "$(docker inspect --format '{{.State.Running}}' "$c")" = true ] || fail "$c stopped"
        sleep 1
    done
    fail "$c not healthy after 60s (status $status)"
}
wait_healthy
client="http://127.0.0.1:$(port 8008)"
curl -fsS "$client/_matrix/client/versions" >/dev/null || fail "/_matrix/client/versions"
echo "healthy; client API at $client"

echo "--- registering through /_synapse/admin/v1/register"
nonce=$(curl -fsS "$client/_synapse/admin/v1/register" | sed -n 's/.*"nonce":"\([^"]*\)".*/\1/p')
[ -n "$nonce" ] || fail "no nonce"
mac=$(printf '%s\0%s\0%s\0%s' "$nonce" smoke smoke-password notadmin | openssl dgst -sha1 -hmac complement | sed 's/.*= //')
curl -fsS -X POST "$client/_synapse/admin/v1/register" \
    -d "{\"nonce\":\"$nonce\",\"username\":\"smoke\",\"password\":\"smoke-password\",\"mac\":\"$mac\"}" | grep -q '"user_id":"@smoke:hs1"' \
    || fail "shared-secret registration"

echo "--- /_matrix/key/v2/server over HTTPS on 8448, checked against the CA"
fed=$(port 8448)
curl -fsS --cacert "$work/ca/ca.crt" --resolve "hs1:$fed:127.0.0.1" "https://hs1:$fed/_matrix/key/v2/server" | grep -q '"server_name":"hs1"' \
    || fail "key server over TLS"

echo "--- restarting: the data is reused"
docker restart "$name" >/dev/null
wait_healthy
client="http://127.0.0.1:$(port 8008)"
curl -fsS -X POST "$client/_matrix/client/v3/login" \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"smoke"},"password":"smoke-password"}' | grep -q access_token \
    || fail "login after the restart"

echo "--- federation between two containers: hs2 joins a room of hs1"
docker run -d --name "$name-hs2" --network "$net" --network-alias hs2 -e SERVER_NAME=hs2 -v "$work/ca:/complement/ca:ro" \
    -p 127.0.0.1::8008 myelin-complement:latest >/dev/null
wait_healthy "$name-hs2"
client2="http://127.0.0.1:$(port 8008 "$name-hs2")"
token() { sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'; }
t1=$(curl -fsS -X POST "$client/_matrix/client/v3/register" -d '{"username":"alice","password":"alice-password","auth":{"type":"m.login.dummy"}}' | token)
t2=$(curl -fsS -X POST "$client2/_matrix/client/v3/register" -d '{"username":"bob","password":"bob-password","auth":{"type":"m.login.dummy"}}' | token)
room=$(curl -fsS -X POST -H "Authorization: Bearer $t1" "$client/_matrix/client/v3/createRoom" -d '{"preset":"public_chat"}' | sed -n 's/.*"room_id":"\([^"]*\)".*/\1/p')
curl -fsS -X POST -H "Authorization: Bearer $t2" "$client2/_matrix/client/v3/join/$room?server_name=hs1" -d '{}' >/dev/null || fail "hs2 could not join hs1's room"
curl -fsS -X PUT -H "Authorization: Bearer $t1" "$client/_matrix/client/v3/rooms/$room/send/m.room.message/1" -d '{"msgtype":"m.text","body":"across containers"}' >/dev/null
for _ in $(seq 1 30); do
    curl -fsS -H "Authorization: Bearer $t2" "$client2/_matrix/client/v3/rooms/$room/messages?dir=b&limit=5" | grep -q "across containers" && break
    sleep 1
done
curl -fsS -H "Authorization: Bearer $t2" "$client2/_matrix/client/v3/rooms/$room/messages?dir=b&limit=5" | grep -q "across containers" \
    || fail "hs1's message did not reach hs2"
echo "PASS"
