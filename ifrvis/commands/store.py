"""`python -m ifrvis.commands.store init [URI]`: create a run store's schema once, before a sweep
(ifrvis.runstore.init_store; URI as `runstore.resolve_uri` decides it)."""

from __future__ import annotations

import sys

from ifrvis.runstore import init_store, resolve_uri


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "init":
        print("usage: python -m ifrvis.commands.store init [URI]", file=sys.stderr)
        return 2
    uri = init_store(resolve_uri(argv[1] if len(argv) > 1 else ""))
    print(f"MLflow store ready: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
