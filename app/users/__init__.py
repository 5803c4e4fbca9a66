"""Validated users (the launch post's model): records with a unique user name."""

from app.domain import Domain, KeyPattern
from app.users.router import router

DOMAIN = Domain(
    name="users",
    routers=[router],
    keys=[
        KeyPattern(
            "user:{*}:*", "read-write", "users and their user-name claims (user:{tag}:unique:...)"
        ),
    ],
    commands=["+evalsha", "+script|load", "+hgetall", "+get", "+set", "+hset"],
)
