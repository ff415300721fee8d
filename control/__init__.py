"""The operations plane both forms of the stack share (docker compose and the native runner in stack/): Kafka's
setup, connector registration, the supervisor (restarts, reader watchdog, tick maintainer), the dead-letter tools,
status (flow, disk), the schema check. What every component needs (settings, secrets, the registry client) is
in core/."""
