#!/bin/sh
# As with the official node image: when the first argument is an option, is no command, or is a plain
# (non-executable) file, it is for node (`docker run IMAGE app.js`, `docker run IMAGE -e '...'`);
# anything else (bash, npm ...) runs as given.
set -e
case "$1" in
  -*) set -- node "$@" ;;
  *)
    if ! command -v "$1" >/dev/null 2>&1 || { [ -f "$1" ] && [ ! -x "$1" ]; }; then
      set -- node "$@"
    fi ;;
esac
exec "$@"
