#!/usr/bin/env bash
# Make the base images locally when no image registry can be reached: a minimal Debian made with
# debootstrap from the mirror this machine's apt sources already name, then Python and Redis on it
# from Debian's own packages (and RabbitMQ, the broker of large fleets). Images that already exist
# are kept (re-running is cheap).
#
#   docker/local-base.sh    # makes impress-local/python:3.11, impress-local/redis:7, impress-local/rabbitmq:3
#   docker build --build-arg BASE_IMAGE=impress-local/python:3.11 ...
set -euo pipefail

SUITE="${SUITE:-bookworm}"
DEBIAN_IMAGE="impress-local/debian:${SUITE}"
PYTHON_IMAGE="${PYTHON_IMAGE:-impress-local/python:3.11}"   # bookworm's python3 is 3.11
REDIS_IMAGE="${REDIS_IMAGE:-impress-local/redis:7}"           # bookworm's redis-server is 7.0
RABBITMQ_IMAGE="${RABBITMQ_IMAGE:-impress-local/rabbitmq:3}"  # bookworm's rabbitmq-server is 3.10
DOCKER="${DOCKER:-docker}"

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The first Debian mirror named in apt's sources (deb822 "URIs:" or one-line "deb URL suite").
apt_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [[ -n "$uri" ]] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                           | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_debian() {
  have_image "$DEBIAN_IMAGE" && return
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  local rootfs mirror
  rootfs=$(mktemp -d)
  mirror=$(apt_mirror)
  echo "debootstrap $SUITE from $mirror" >&2
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >&2
  # Same sources inside the image as on the host, and no package caches in the layer.
  echo "deb $mirror $SUITE main" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# An image FROM the local Debian with some Debian packages installed (stdin is the Dockerfile).
make_with_packages() {
  local tag=$1 extra=$2; shift 2
  have_image "$tag" && return
  printf 'FROM %s\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends %s \\\n    && rm -rf /var/lib/apt/lists/*\n%s\n' \
    "$DEBIAN_IMAGE" "$*" "$extra" | "$DOCKER" build -q -t "$tag" - >/dev/null
}

make_debian
make_with_packages "$PYTHON_IMAGE" 'ENV LANG=C.UTF-8' python3 python3-venv ca-certificates
# Same entry as the public redis image: `redis-server ARGS...`; /data is where the AOF lives.
make_with_packages "$REDIS_IMAGE" 'RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]' redis-server
# Like the public rabbitmq image: `rabbitmq-server`, data in /var/lib/rabbitmq, conf.d for settings.
make_with_packages "$RABBITMQ_IMAGE" 'RUN mkdir -p /etc/rabbitmq/conf.d && chown -R rabbitmq:rabbitmq /etc/rabbitmq
USER rabbitmq
EXPOSE 5672
CMD ["rabbitmq-server"]' rabbitmq-server
echo "$PYTHON_IMAGE $REDIS_IMAGE $RABBITMQ_IMAGE"
