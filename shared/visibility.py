"""Who sees a config or a session: the one rule both services apply, in Python and in SQL.

A caller sees an object when they own it, when it is ORG (the whole tenant), when it is TEAM
and the caller is in the object's team, or when they are a tenant admin (or a service
identity). Anything else is answered exactly as if it did not exist. The tenant boundary is
not decided here: every read is scoped by tenant before this rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, false, or_, true

from shared.auth.identity import Identity, Role, current


class Visibility(Enum):
    """Who besides its owner sees an object; stored by name."""

    PRIVATE = "PRIVATE"
    TEAM = "TEAM"
    ORG = "ORG"


class _Owned(Protocol):
    @property
    def owner(self) -> str: ...

    @property
    def visibility(self) -> Visibility: ...

    @property
    def team(self) -> str: ...


@dataclass(frozen=True)
class Readers:
    """Who may see an object: its owner, its visibility, and its owner's team."""

    owner: str = ""
    visibility: Visibility = Visibility.ORG
    team: str = ""

    @classmethod
    def of(cls, owned: _Owned) -> Readers:
        """The readers of anything that records an owner, a visibility and a team."""
        return cls(owned.owner, owned.visibility, owned.team)


@dataclass(frozen=True)
class Viewer:
    """What the rule needs to know of a caller."""

    subject: str
    team: str = ""
    # Tenant admins (and service identities) see everything in their scope.
    sees_all: bool = False

    @classmethod
    def of(cls, identity: Identity) -> Viewer:
        """The viewer an authenticated identity is."""
        return cls(
            identity.subject,
            identity.team,
            sees_all=identity.service or identity.may(Role.ADMIN),
        )

    def may_see(self, owner: str, visibility: Visibility, team: str) -> bool:
        """Whether this viewer may see an object with that owner, visibility and team."""
        if self.sees_all or visibility is Visibility.ORG:
            return True
        if owner and owner == self.subject:
            return True
        return visibility is Visibility.TEAM and bool(self.team) and self.team == team

    def sees(self, readers: Readers) -> bool:
        """may_see, for an object's recorded readers."""
        return self.may_see(readers.owner, readers.visibility, readers.team)

    def may_share(self, owner: str) -> bool:
        """Whether this viewer may change who sees an object: its owner, or an admin."""
        return self.sees_all or (bool(owner) and owner == self.subject)

    def condition(self, owner: Any, visibility: Any, team: Any) -> ColumnElement[bool]:
        """may_see as a SQL condition over an owner, a visibility (stored by name) and a team
        column, for listings that filter in the database."""
        if self.sees_all:
            return true()
        rules: list[ColumnElement[bool]] = [visibility == Visibility.ORG.value]
        rules.append(owner == self.subject if self.subject else false())
        if self.team:
            rules.append(and_(visibility == Visibility.TEAM.value, team == self.team))
        return or_(*rules)


# What a caller that sees everything (an admin, a service identity, work of no RPC) is.
SEES_ALL = Viewer("", sees_all=True)


def caller() -> Viewer:
    """The viewer the running RPC acts as (outside any RPC: the development admin).

    Use cases take the caller from the same per-call context the interceptor sets, so no
    RPC path can leave the rule out by forgetting to pass it.
    """
    return Viewer.of(current())


def visibility_named(name: str) -> Visibility:
    """A stored visibility; anything unknown reads as PRIVATE, the narrowest."""
    try:
        return Visibility(name)
    except ValueError:
        return Visibility.PRIVATE
