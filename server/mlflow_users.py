"""The users of the cluster's MLflow server (server/start_mlflow_server.sh, docs/cluster_store.md).

The operator writes one file, readable by its owner only: one user a line, `name:password` (the
password is what follows the first colon; MLflow asks for 12 characters or more), blank lines and
`#` comments ignored. The first user is MLflow's admin (manages users and permissions in the UI);
the others are ordinary users with the server's default permission. The file is the whole list:
`sync` makes basic auth's user table hold exactly its users, so removing a line and running the
start script again revokes that user.

    python server/mlflow_users.py check FILE        # prints the admin's name; one line on an error
    python server/mlflow_users.py sync FILE DB_URI  # DB_URI: basic auth's database (its ini's database_uri)
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

MIN_PASSWORD = 12  # mlflow.utils.validation._validate_password


class UsersFileError(Exception):
    """The users file cannot be used; the message is one line and never holds a password."""


def read_users(path: str | Path) -> list[tuple[str, str]]:
    """[(name, password)] in the file's order; the first one is the admin."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as error:
        raise UsersFileError(f"users file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsersFileError(f"users file {path} holds passwords: make it readable by you only (chmod 600)")
    users: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, password = line.partition(":")
        name = name.strip()
        where = f"users file {path}, line {number}"
        if not colon or not name:
            raise UsersFileError(f"{where}: expected name:password")
        if any(c.isspace() for c in name):
            raise UsersFileError(f"{where}: user name '{name}' holds white space")
        if name in seen:
            raise UsersFileError(f"{where}: user '{name}' is listed twice")
        if len(password) < MIN_PASSWORD:
            raise UsersFileError(f"{where}: password of '{name}' has under {MIN_PASSWORD} characters")
        seen.add(name)
        users.append((name, password))
    if not users:
        raise UsersFileError(f"users file {path} lists no user (one name:password a line)")
    return users


def sync(path: str | Path, db_uri: str) -> str:
    """Make basic auth's user table at `db_uri` hold the file's users (passwords, admin flag), and only
    them. Returns a one-line summary."""
    users = read_users(path)
    # Importing the auth package reads its config (MLFLOW_AUTH_CONFIG_PATH) and needs Flask-WTF.
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(db_uri)  # creates or migrates basic auth's tables
    wanted = {name: (password, index == 0) for index, (name, password) in enumerate(users)}
    existing = {user.username: user for user in store.list_users()}
    created = updated = removed = 0
    for name, (password, is_admin) in wanted.items():
        if name not in existing:
            store.create_user(name, password, is_admin=is_admin)
            created += 1
            continue
        same_password = store.authenticate_user(name, password, use_primary=True)
        if not same_password or existing[name].is_admin != is_admin:
            store.update_user(name, password=None if same_password else password, is_admin=is_admin)
            updated += 1
    for name in existing.keys() - wanted.keys():
        store.delete_user(name)
        removed += 1
    return (
        f"{len(users)} users (admin '{users[0][0]}'): {created} created, {updated} updated, {removed} removed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate the users file, print the admin's name")
    check.add_argument("file")
    sync_parser = commands.add_parser("sync", help="make basic auth's users those of the file")
    sync_parser.add_argument("file")
    sync_parser.add_argument("db_uri")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            print(read_users(args.file)[0][0])
        else:
            print(sync(args.file, args.db_uri))
    except UsersFileError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
