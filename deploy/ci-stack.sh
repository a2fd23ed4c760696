#!/usr/bin/env bash
# CI's check of the container path (called from .ci/run; runs by hand too, as root): builds the claas
# and gateway images from compose.yaml's Containerfile on a Debian base made here (CI reaches no image
# registry), starts the cpu profile's claas and OpenClaw gateway with podman-compose, runs the
# README's learning loop against claas's published port, sends one chat through the gateway to claas,
# and tears everything down. Any failure stops it with the services' logs.
#
# podman here: runc (crun refuses this kernel's hybrid cgroups), raised ulimits, netavark with
# aardvark-dns (the CNI backend has no service-name DNS without a plugin bookworm lacks), no systemd (so
# healthchecks are never scheduled and podman-compose ignores `condition: service_healthy`: the stack
# starts in stages, polling `podman healthcheck run`), and HTTPS through an intercepting proxy (the
# host's CA bundle goes into the builds for npm).
#   CLAAS_STACK_WORK   cache folder: the base rootfs tarball (default ~/.cache/claas-stack)
#   CLAAS_STACK_KEEP=1 leave the stack running for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
step() { echo "== ci-stack [$(( $(date +%s) - t0 )) s] $*"; }
die() { echo "ci-stack: $*" >&2; exit 1; }

WORK=${CLAAS_STACK_WORK:-$HOME/.cache/claas-stack}
PROJECT=claas-ci
BASE=localhost/debian-base:bookworm
export CLAAS_PORT=${CLAAS_PORT:-18000} OPENCLAW_PORT=${OPENCLAW_PORT:-18790}
export CLAAS_IMAGE=localhost/claas:ci CLAAS_GATEWAY_IMAGE=localhost/claas-gateway:ci
export CLAAS_ADAPTER=me/assistant OPENCLAW_GATEWAY_TOKEN="ci-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
mkdir -p "$WORK"

export CONTAINERS_CONF="$WORK/containers.conf"
cat > "$CONTAINERS_CONF" <<'EOF'
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF

for tool in podman podman-compose mmdebstrap /usr/libexec/podman/catatonit /usr/lib/podman/netavark /usr/lib/podman/aardvark-dns; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install podman podman-compose mmdebstrap runc catatonit netavark aardvark-dns)"
done

# --- the gpu profile cannot run here (no GPU, no registry for vLLM's image): validate the file ----
# podman-compose 1.0 has no `config`; docker-compose 1.29 (Debian's) checks it against the compose
# schema with the profile's services, without an engine. test/compose.test.ts checks vLLM's flags.
if command -v docker-compose >/dev/null; then
  step "docker-compose --profile gpu config"
  CLAAS_MODEL_DIR=/srv/base-model docker-compose -f compose.yaml --profile gpu config -q || die "compose.yaml does not validate for the gpu profile"
elif [ -n "${CI:-}" ]; then
  die "docker-compose is not installed (Debian: apt-get install docker-compose); CI validates the gpu profile with it"
else
  echo "ci-stack: docker-compose (Debian's, for \`config\`) is not installed; the gpu profile is checked by test/compose.test.ts only" >&2
fi

# --- the base image: Debian bookworm minbase, the same suite as the default debian:bookworm-slim ----
if ! podman image exists "$BASE"; then
  step "building the base rootfs with mmdebstrap"
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  mmdebstrap --quiet --variant=minbase --include=ca-certificates --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr bookworm "$WORK/base.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main"
  podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
  rm -f "$WORK/base.tar"
fi

# --- the images -------------------------------------------------------------------------------------
# The host's npm cache is lent to the build stages (OpenClaw is ~650 MB; .ci/run has fetched it already).
build_args=(--build-arg "BASE_IMAGE=$BASE" --build-arg NODE_EXTRA_CA_CERTS=/run/host-ca.crt
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro -v "$HOME/.npm:/root/.npm" -f Containerfile
  --format docker  # docker format: OCI images drop HEALTHCHECK
  --network host)  # the build steps' downloads: netavark's bridge has no working upstream DNS here
# The image installs the npm package; CI packs it here (its engine is the one `npm ci` compiled and
# the tests ran) rather than compiling the engine a second time inside the build.
step "npm pack"
rm -rf deploy/.pack && mkdir -p deploy/.pack
npm pack --silent --pack-destination deploy/.pack >/dev/null
mv deploy/.pack/claas-*.tgz deploy/.pack/claas.tgz
build_args+=(--build-arg CLAAS_PACKAGE=deploy/.pack/claas.tgz)
step "podman build --target claas"
podman build --quiet "${build_args[@]}" --target claas -t "$CLAAS_IMAGE" . >/dev/null
step "podman build --target gateway"
podman build --quiet "${build_args[@]}" --target gateway -t "$CLAAS_GATEWAY_IMAGE" . >/dev/null
rm -rf deploy/.pack
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "claas(-gateway)?:ci" | sed 's/^/   image /'

# --- the stack ------------------------------------------------------------------------------------
compose() { podman-compose --no-ansi -p "$PROJECT" -f compose.yaml "$@"; }
name() { echo "${PROJECT}_$1_1"; }
teardown() {
  local rc=$?
  if [ $rc != 0 ]; then
    for s in claas gateway; do
      echo "---- logs of $s (last 80 lines)" >&2
      podman logs --tail 80 "$(name "$s")" >&2 2>&1 || true
    done
  fi
  if [ "${CLAAS_STACK_KEEP:-0}" = 1 ]; then
    echo "CLAAS_STACK_KEEP=1: the stack is still running (claas on :$CLAAS_PORT, gateway on :$OPENCLAW_PORT)"
  else
    compose down -v >/dev/null 2>&1 || true
    podman volume rm -f "${PROJECT}_claas-data" "${PROJECT}_openclaw-state" >/dev/null 2>&1 || true
  fi
  step "done (exit $rc)"
}
trap teardown EXIT

# Polls a container's healthcheck until it passes (podman runs none on its own here).
wait_healthy() {
  local c=$1 limit=$2 start=$SECONDS
  until podman healthcheck run "$c" >/dev/null 2>&1; do
    [ "$(podman inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" = true ] || die "$c is not running"
    (( SECONDS - start < limit )) || die "$c was not healthy within $limit s"
    sleep 2
  done
}

compose down -v >/dev/null 2>&1 || true
step "starting claas"
compose up -d --no-build claas >/dev/null
wait_healthy "$(name claas)" 180
step "starting the gateway"
# podman-compose 1.0 brings a service's dependencies up with it whatever the flags: its second
# `podman run` of claas fails on the name in use and it then starts the running one, a no-op.
compose up -d --no-build gateway >"$WORK/gateway-up.log" 2>&1 || { cat "$WORK/gateway-up.log" >&2; die "podman-compose up gateway failed"; }
wait_healthy "$(name gateway)" 600

# --- the README's loop, against the published port, with the admin key ----------------------------
ADMIN_KEY=$(podman exec "$(name claas)" cat /data/keys/admin.key)
[ -n "$ADMIN_KEY" ] || die "no admin key in the claas volume"
loop=$(awk '/<!-- loop:begin -->/{on=1; next} /<!-- loop:end -->/{on=0} on' README.md | sed '/^```/d')
[ -n "$loop" ] || die "no loop between <!-- loop:begin --> and <!-- loop:end --> in README.md"
step "running the README loop against http://127.0.0.1:$CLAAS_PORT"
out_dir=$(mktemp -d)
# The loop's curl calls carry no key (a loopback server needs none); this one listens beyond
# loopback, so every curl gets the admin key here.
{
  echo 'set -o pipefail'
  echo 'curl() { command curl -H "Authorization: Bearer $KEY" "$@"; }'
  echo "$loop"
} > "$out_dir/loop.sh"
loop_out=$(cd "$out_dir" && CLAAS="http://127.0.0.1:$CLAAS_PORT" KEY="$ADMIN_KEY" timeout 900 bash loop.sh 2>&1) \
  || die "the README loop failed or timed out:
$loop_out"
echo "$loop_out" | sed 's/^/   | /'
# What the loop prints: the profile's source, the new alias, the version each waited-for batch made,
# the alias after them, the reply to a new question, the versions' table, the rollback's version.
# Which item fills which batch depends on timing (4 items or 2 s), so the versions are checked to
# rise and the alias to follow them rather than to be exactly 2 and 3.
mapfile -t L <<<"$loop_out"
[[ ${L[0]} == *training_profile.json ]] || die "the loop did not show the toy's training profile"
[ "${L[1]}" = ana/assistant@v0001 ] || die "the loop did not create ana/assistant@v0001"
[[ ${L[2]} =~ ^[0-9]+$ && ${L[3]} =~ ^[0-9]+$ ]] && (( L[2] >= 2 && L[3] > L[2] )) \
  || die "the feedback batches did not make new versions (got '${L[2]}', '${L[3]}')"
[ "${L[4]}" = "ana/assistant@v$(printf %04d "${L[3]}")" ] || die "the alias did not move to version ${L[3]} (got '${L[4]}')"
reply=$(printf '%s\n' "${L[@]:5}" | sed '/^\[$/,$d')
[[ $reply == *42* && $reply == "${reply^^}" ]] || die "the reply after the feedback is not in capitals with the answer 42: $reply"
[ "${L[-1]}" = 1 ] || die "the rollback to version 1 did not take (got '${L[-1]}')"
# (grep without -q: an early exit would break tar's pipe, which pipefail reports as a failure)
tar -tzf "$out_dir/ana-assistant-v0003.tar.gz" | grep adapter_config.json >/dev/null || die "the exported version 3 is not a PEFT archive"
rm -rf "$out_dir"

# --- one chat through the gateway, answered by claas -----------------------------------------------
step "one chat through the OpenClaw gateway"
reply=$(timeout 900 podman exec "$(name gateway)" openclaw agent --agent main --message "What is the opposite of hot?" --json) \
  || die "openclaw agent through the gateway failed:
$reply"
node -e 'const r = JSON.parse(require("fs").readFileSync(0, "utf8")); const t = JSON.stringify(r).match(/"finalAssistantVisibleText":("(?:[^"\\]|\\.)*")/); console.log(t ? JSON.parse(t[1]) : "(no reply text)")' <<<"$reply" | sed 's/^/   | /' || die "openclaw agent printed no JSON result"
# The plugin recorded the completion id of the reply it saw; claas must hold that record, served by
# the gateway's adapter.
cid=$(podman exec "$(name gateway)" node -e '
  const b = JSON.parse(require("fs").readFileSync("/state/claas-feedback/buffer.json", "utf8"));
  const ids = Object.values(b.replies ?? {}).map((r) => r.completionId);
  process.stdout.write(ids.at(-1) ?? "")') || die "the gateway's plugin buffer is unreadable"
[[ $cid == chatcmpl-* ]] || die "the gateway's plugin recorded no completion id from claas"
adapter=$(curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "http://127.0.0.1:$CLAAS_PORT/v1/completions/$cid" | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).adapter')
[ "$adapter" = "$CLAAS_ADAPTER" ] || die "completion $cid was served by $adapter, not $CLAAS_ADAPTER"
step "the gateway's chat was answered by claas ($cid, adapter $adapter)"
