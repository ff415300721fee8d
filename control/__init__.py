"""The control plane both forms of the stack share (docker compose and the native runner in stack/),
and the producer: settings from the one `.env`, registry rules, connector registration."""
