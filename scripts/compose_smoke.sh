#!/usr/bin/env bash
# Compose end to end, from a clean clone: Docker engine (installed and started when absent), base
# images (made locally with docker/local-base.sh when the public ones cannot be pulled), images
# built, Redis + RabbitMQ (broker) + API + two CPU workers up, then scripts/compose_smoke.py through
# HTTP: purify / detect / evaluate, a worker container killed mid-job, the Redis container
# restarted; everything torn down. Prints ONE JSON line (build seconds, image sizes, round trips,
# recovery seconds). Re-runs reuse the local bases and Docker's build cache.
#   scripts/compose_smoke.sh          (root, or a user allowed to run docker)
# Environment: PIP_CA (CA bundle for pip in builds; default: the host's, if present),
#   SMOKE_LOCAL_BASES=auto|yes|no, SMOKE_PYTHON (a Python with the project's dependencies, e.g. the
#   venv of `pip install -e .[dev]`; the HTTP half uses impress.client), SMOKE_KEEP=1.
# On failure it names the step that failed and prints what matters for it: the build's last lines,
# or the last lines of each service's container log (api, workers, brokers), before tearing down.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
log() { echo "compose smoke: $*" >&2; }
since() { python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$1"; }
LOGS=$(mktemp -d -t compose-smoke.XXXXXX)
STEP=engine
step() { STEP=$1; log "step: $1"; }
# The services whose logs explain a failure of the running stack, in the order to read them.
SERVICES=(api worker-cpu redis rabbitmq webhooks)
on_error() {
  local rc=$?
  trap - ERR
  log "FAILED at step '$STEP' (exit $rc); logs in $LOGS"
  case "$STEP" in
    build-*) tail -n 40 "$LOGS/$STEP.log" >&2 || true ;;
    up|smoke)
      [[ -f "$LOGS/up.log" ]] && tail -n 20 "$LOGS/up.log" >&2
      compose ps >&2 || true
      for service in "${SERVICES[@]}"; do
        echo "----- $service (last 40 lines)" >&2
        compose logs --no-color --tail 40 "$service" >&2 2>/dev/null || true
      done ;;
    *) [[ -f /var/log/dockerd-smoke.log ]] && tail -n 20 /var/log/dockerd-smoke.log >&2 || true ;;
  esac
}
trap on_error ERR

# -- engine -------------------------------------------------------------------------------------------
# BuildKit secrets need a client with BuildKit: Debian's docker.io client has it (a bare docker 28
# client without buildx does not), so prefer it.
DOCKER=$(command -v /usr/bin/docker || command -v docker || true)
if [[ -z "$DOCKER" ]] || ! "$DOCKER" info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    log "installing the Docker engine from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >&2
  fi
  DOCKER=/usr/bin/docker
  if ! "$DOCKER" info >/dev/null 2>&1; then
    log "starting dockerd"
    nohup dockerd >/var/log/dockerd-smoke.log 2>&1 &
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
export PATH="$(dirname "$DOCKER"):$PATH"   # scripts/compose_smoke.py calls `docker` too
if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE=("$DOCKER" compose); else COMPOSE=(docker-compose); fi

# -- bases ----------------------------------------------------------------------------------------------
step bases
PUBLIC_BASE=python:3.11-slim-bookworm
case "${SMOKE_LOCAL_BASES:-auto}" in
  yes) local_bases=1 ;;
  no) local_bases=0 ;;
  *) if "$DOCKER" image inspect "$PUBLIC_BASE" >/dev/null 2>&1 || timeout 60 "$DOCKER" pull -q "$PUBLIC_BASE" >/dev/null 2>&1
     then local_bases=0; else local_bases=1; fi ;;
esac
bases_started=$(date +%s.%N)
if (( local_bases )); then
  log "no registry: local base images from Debian packages"
  DOCKER="$DOCKER" docker/local-base.sh >/dev/null
  export IMPRESS_BASE_IMAGE=impress-local/python:3.11 IMPRESS_REDIS_IMAGE=impress-local/redis:7 \
         IMPRESS_RABBITMQ_IMAGE=impress-local/rabbitmq:3
else
  export IMPRESS_BASE_IMAGE=$PUBLIC_BASE
fi
bases_s=$(since "$bases_started")

# -- build ------------------------------------------------------------------------------------------------
export IMPRESS_IMAGE_PREFIX=impress-smoke IMPRESS_TAG=latest
PIP_CA="${PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"
secret=(); [[ -f "$PIP_CA" ]] && secret=(--secret "id=pip_ca,src=$PIP_CA")
declare -A build_s size_mb
for target in api worker-cpu; do
  t0=$(date +%s.%N)
  step "build-$target"
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress plain -f docker/Dockerfile --target "$target" "${secret[@]}" \
    --build-arg "BASE_IMAGE=$IMPRESS_BASE_IMAGE" -t "$IMPRESS_IMAGE_PREFIX/$target:$IMPRESS_TAG" . >"$LOGS/$STEP.log" 2>&1
  build_s[$target]=$(since "$t0")
  size_mb[$target]=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$IMPRESS_IMAGE_PREFIX/$target:$IMPRESS_TAG") / 1000000 ))
done

# -- up, test, down -------------------------------------------------------------------------------------
PROJECT=impress-smoke
# CPU service (docker/cpu.env: bundled model, offline distance), RabbitMQ as the broker.
export IMPRESS_API_PORT=${IMPRESS_API_PORT:-18000} IMPRESS_BROKER_URL="amqp://guest:guest@rabbitmq:5672//"
set -a; source docker/cpu.env; set +a
IMPRESS_API_KEYS="smoke-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"; export IMPRESS_API_KEYS
export IMPRESS_CPU_THREADS=${IMPRESS_CPU_THREADS:-1}   # two workers share the cores of a CI runner
compose() { "${COMPOSE[@]}" -p "$PROJECT" --profile cpu --profile rabbitmq "$@"; }
teardown() {
  if [[ "${SMOKE_KEEP:-0}" != 1 ]]; then compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
}
trap teardown EXIT
teardown
step up
up_started=$(date +%s.%N)
# A cold first start can outlast a dependency's healthcheck (RabbitMQ, Redis replaying its AOF): one
# more `up` then finds them healthy and starts the rest.
if ! compose up -d --no-build --scale worker-cpu=2 >"$LOGS/up.log" 2>&1; then
  log "compose up failed once (a dependency not healthy in time?); retrying"
  sleep 10
  compose up -d --no-build --scale worker-cpu=2 >>"$LOGS/up.log" 2>&1
fi
up_s=$(since "$up_started")
measured=$(python3 -c 'import json, sys; a = sys.argv[1:]; print(json.dumps({
  "compose": a[0], "local_bases": a[1] == "1", "bases_s": float(a[2]),
  "build_s": {"api": float(a[3]), "worker-cpu": float(a[4])},
  "image_mb": {"api": int(a[5]), "worker-cpu": int(a[6])}, "up_s": float(a[7])}))' \
  "$("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" --version)" "$local_bases" "$bases_s" \
  "${build_s[api]}" "${build_s[worker-cpu]}" "${size_mb[api]}" "${size_mb[worker-cpu]}" "$up_s")
step smoke
result=$(PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "${SMOKE_PYTHON:-python3}" scripts/compose_smoke.py \
           --api "http://127.0.0.1:$IMPRESS_API_PORT" --api-key "$IMPRESS_API_KEYS" --project "$PROJECT" \
           --measured "$measured")
step teardown
teardown
trap - EXIT
python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r["total_s"] = float(sys.argv[2]); print(json.dumps(r))' \
  "$result" "$(since "$started")"
