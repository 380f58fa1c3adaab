#!/usr/bin/env bash
# The end-to-end tests (service, worker-killed redelivery) with RabbitMQ as the Celery broker, on a
# vhost of their own that is deleted afterwards; job records and blobs stay in Redis as always.
#   scripts/test_rabbitmq.sh [pytest args]     (needs rabbitmqctl on this host and guest/guest)
set -euo pipefail
cd "$(dirname "$0")/.."
RABBITMQ="${RABBITMQ:-127.0.0.1:5672}"
vhost="impress-test-$$"
rabbitmqctl -q add_vhost "$vhost"
trap 'rabbitmqctl -q delete_vhost "$vhost"' EXIT
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
IMPRESS_TEST_BROKER_URL="amqp://guest:guest@${RABBITMQ}/${vhost}" \
  python -m pytest -q tests/test_service.py tests/test_worker_lost.py "$@"
