"""`python -m control`: the control plane's one-shot commands, the same in both forms of the stack.

  setup     apply the registry's compatibility levels, then register the sink connector and wait until it
            RUNs: what `scripts/stack.sh up` does once the services are healthy, and what docker compose's
            one-shot `control-setup` runs
  kafka-setup  Kafka's principals (SCRAM-SHA-512 credentials from the secrets), their ACLs, the topics and the
            ticks' and dead letters' retention (.env), as the super user admin (control/kafka_setup.py): what
            `scripts/stack.sh up` does once the broker answers, and what docker compose's one-shot `kafka-setup`
            runs before Connect starts
  levels    only the levels: the global one and one per subject, from schemas/compatibility.json
  register  only the connector (scripts/register_connector.sh): validate, create or update, wait for RUNNING
  secrets   docker compose's generated passwords, one file each in --dir (the `secrets` volume):
            `init` creates the missing ones (compose's one-shot `secrets` runs it on every up), `show NAME`
            prints one: `docker compose run --rm secrets show POWERBI_DB_PASSWORD`

Addresses and credentials come from the settings (.env, the environment, the native stack's secrets file):
SCHEMA_REGISTRY_URL / REGISTRY_PORT, CONNECT_URL / CONNECT_PORT, CONNECT_REST_USER / CONNECT_REST_PASSWORD,
KAFKA_BOOTSTRAP_SERVERS / KAFKA_PORT, KAFKA_*_PASSWORD.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control.connector import DEFAULT_CONNECTOR_FILE, ConnectorError
from control.kafka_setup import KafkaSetupError, ensure_kafka
from control.setup import apply_registry_levels, register_connector, setup
from core.registry import RegistryError, RulesError
from core.secrets import ensure_secret_files, read_secret_files
from core.settings import SECRET_KEYS, Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("setup", "levels, then the connector"), ("register", "the connector only")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--file", type=Path, default=DEFAULT_CONNECTOR_FILE,
                       help="connector JSON (default: %(default)s)")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for Connect and RUNNING")
    sub.add_parser("levels", help="the registry's compatibility levels only")
    sub.add_parser("kafka-setup", help="Kafka's credentials, ACLs, topics and their retention")
    secrets = sub.add_parser("secrets", help="compose's generated passwords: init, or show one")
    secrets.add_argument("--dir", type=Path, required=True, help="folder of the secret files")
    secrets_sub = secrets.add_subparsers(dest="action", required=True)
    secrets_sub.add_parser("init", help="create the missing secret files (never changes one that exists)")
    show = secrets_sub.add_parser("show", help="print one secret")
    show.add_argument("name", choices=SECRET_KEYS)
    args = parser.parse_args(argv)
    if args.command == "secrets":
        return secrets_command(args)
    try:
        settings = Settings.load()
        if args.command == "levels":
            apply_registry_levels(settings)
        elif args.command == "kafka-setup":
            print("\n".join(ensure_kafka(settings)), flush=True)
        elif args.command == "register":
            register_connector(settings, args.file, args.timeout)
        else:
            setup(settings, args.file, args.timeout)
    except (SettingsError, RulesError, RegistryError, ConnectorError, KafkaSetupError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


def secrets_command(args: argparse.Namespace) -> int:
    if args.action == "init":
        created = ensure_secret_files(args.dir)
        print(f"secrets: created {', '.join(created)}" if created else "secrets: all present, none changed",
              flush=True)
        return 0
    value = read_secret_files(args.dir).get(args.name)
    if not value:
        print(f"ERROR: {args.name} has not been generated yet in {args.dir}: run `docker compose up` first",
              file=sys.stderr)
        return 1
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
