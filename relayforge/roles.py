"""Admin API roles, declared once (each allows what the ones before it allow), and the actor
that holds one."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from relayforge.errors import Forbidden


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on the admin API or the CLI: a database key, a bootstrap (fallback) key, or the
    command line. Written to the audit log with every change."""

    key_id: uuid.UUID | None
    role: Role
    source: str  # "db", "fallback" or "cli"

    def require(self, needed: Role) -> None:
        if not self.role.allows(needed):
            raise Forbidden(f"this action needs the {needed} role; the key has {self.role}")


CLI = Actor(None, Role.ADMIN, "cli")
