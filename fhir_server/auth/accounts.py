"""The accounts' lifecycle, as the retention sees it (privacy/retention_accounts.py): when
each account was last signed in to (both factors), whether it is closed (closed accounts
cannot sign in: auth/users.py) and whether its holder asked for its deletion. Accounts made
before these were kept count as seen when this first opens them."""

from __future__ import annotations

from typing import Any

from .. import clock
from .users import Users


class Accounts:
    """The lifecycle columns of the user accounts of `users`."""

    def __init__(self, users: Users) -> None:
        self.users = users

    def accounts(self) -> list[dict[str, Any]]:
        conn = self.users._conn()  # the accounts' own table (users.py makes its columns)
        conn.execute("UPDATE user SET last_seen = ? WHERE last_seen IS NULL", (clock.instant(),))
        rows = conn.execute("SELECT username, fhir_user, last_seen, closed, deletion_asked "
                            "FROM user ORDER BY username")
        return [dict(zip(("username", "fhir_user", "last_seen", "closed", "deletion_asked"), row,
                         strict=True)) for row in rows]

    def close(self, username: str, *, asked: bool = False, seen: str | None = None) -> bool:
        """Close the account now (if open): it is suspended too, so that its codes and
        refresh tokens stop (grants.py); `asked`: its holder asked for its deletion, now (if
        not before); `seen`: only if it was last signed in to then (the retention closes an
        account found inactive, not one signed in to since). Whether it was."""
        now = clock.instant()
        return self.users._conn().execute(
            "UPDATE user SET closed = COALESCE(closed, ?), suspended_at = CASE WHEN suspended "
            "THEN suspended_at ELSE ? END, suspended = 1, deletion_asked = CASE "
            "WHEN ? THEN COALESCE(deletion_asked, ?) ELSE deletion_asked END WHERE username = ? "
            "AND (? IS NULL OR last_seen = ?)",
            (now, clock.seconds(), asked, now, username, seen, seen)).rowcount > 0

    def delete(self, username: str) -> None:
        self.users._conn().execute("DELETE FROM user WHERE username = ?", (username,))
