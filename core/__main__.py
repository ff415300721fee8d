"""`python -m core settings`: check the settings, or print them for bash.

  python3 -m core settings            check .env and the environment against the declaration
                                      (core/settings.py); one error lists every bad or unknown key
  python3 -m core settings --shell    the same check, then `export KEY=value` lines (shell-quoted) for every
                                      setting of the file (and the declared defaults), the environment winning:
                                      what scripts/lib/settings.sh's load_settings evaluates

Standard library only: it runs on the machine's python3 before the project's virtualenv exists (.ci/run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import DECLARED, SettingsError, load_env, settings_file, shell_exports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("settings", help="check the settings; --shell: print them as export lines")
    check.add_argument("--shell", action="store_true", help="print `export KEY=value` lines for bash")
    check.add_argument("--file", type=Path, help="the settings file (default: $CRYPTOPIPE_ENV_FILE, else .env)")
    args = parser.parse_args(argv)
    try:
        if args.shell:
            sys.stdout.write(shell_exports(args.file))
        else:
            values = load_env(args.file)
            print(f"settings: {settings_file(args.file)} and the environment are valid "
                  f"({sum(key in values for key in DECLARED)} of {len(DECLARED)} declared settings set)")
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
