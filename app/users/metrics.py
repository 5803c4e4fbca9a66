"""What the user domain tells an operator: users created."""

from __future__ import annotations

from prometheus_client import Counter

CREATED = Counter("mdb_users_created", "Users created (a user name already taken is not counted).")
