#!/usr/bin/env bash
# `make run`: starts a throwaway docker-registry on a free loopback port with one
# demo user, runs the push check against it with the right password (a pass)
# and with a wrong one (a fail), then stops the registry and removes its data.
set -euo pipefail
doctor=${1:?usage: demo.sh STELLA_DOCTOR PLUGINS_DIR}
plugins=${2:?usage: demo.sh STELLA_DOCTOR PLUGINS_DIR}

# A demo credential, hashed once with `htpasswd -Bbn doctor doctor-demo-password`.
user=doctor
password=doctor-demo-password
hash='$2y$10$5L91GX4hWNlxeUbfQDN5heq4dqEk9LvXZg21Uy5hpxgS.uqBaOfOq'

work=$(mktemp -d)
registry_pid=
cleanup() {
  local status=$?
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 40000))
  if port_is_free "$candidate"; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "demo: found no free loopback port" >&2; exit 1; }

printf '%s:%s\n' "$user" "$hash" >"$work/htpasswd"
cat >"$work/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}, delete: {enabled: true}}
http: {addr: "127.0.0.1:$port", secret: demo-only-secret}
auth: {htpasswd: {realm: stella-doctor-demo, path: $work/htpasswd}}
YAML
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!

for _ in $(seq 1 100); do
  port_is_free "$port" || break
  sleep 0.1
done
port_is_free "$port" && { echo "demo: docker-registry did not start:" >&2; cat "$work/registry.log" >&2; exit 1; }

export OCI__RegistryUrl="http://127.0.0.1:$port" OCI__Username="$user"
echo "== local docker-registry at $OCI__RegistryUrl, user '$user', the right password"
OCI__Password="$password" "$doctor" run --plugins "$plugins" --check check.integration.oci.push

echo
echo "== the same check with a wrong password (a fail is expected here)"
status=0
OCI__Password="not-the-password" "$doctor" run --plugins "$plugins" --check check.integration.oci.push || status=$?
if [ "$status" -ne 1 ]; then
  echo "demo: expected exit code 1 for the failed check, got $status" >&2
  exit 1
fi
