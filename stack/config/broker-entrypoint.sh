#!/usr/bin/env bash
# docker compose's broker: hands the super user's password to the broker, then runs the image's own start
# (/etc/kafka/docker/run: KafkaDockerWrapper writes server.properties from the mounted shared file plus the KAFKA_*
# variables, formats the storage once, starts Kafka). The password is read from BROKER_ADMIN_PASSWORD_FILE (the
# stack's generated KAFKA_ADMIN_PASSWORD) into BROKER_ADMIN_PASSWORD, which the env config provider in
# stack/config/kafka-broker.properties resolves; never a KAFKA_* name, which the image would copy into
# server.properties, and never on a command line. The native stack sets the same variable (stack/services.py).
set -euo pipefail
file="${BROKER_ADMIN_PASSWORD_FILE:?BROKER_ADMIN_PASSWORD_FILE is not set (docker-compose.yml)}"
[[ -r "$file" ]] || { echo "ERROR: BROKER_ADMIN_PASSWORD_FILE: cannot read $file" >&2; exit 1; }
BROKER_ADMIN_PASSWORD="$(< "$file")"
[[ -n "$BROKER_ADMIN_PASSWORD" ]] || { echo "ERROR: $file is empty" >&2; exit 1; }
export BROKER_ADMIN_PASSWORD
unset BROKER_ADMIN_PASSWORD_FILE
exec "${KAFKA_DOCKER_RUN:-/etc/kafka/docker/run}" "$@"
