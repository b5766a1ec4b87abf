"""User maps: where a user's mailbox lives and whether the password is right."""

from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome

__all__ = ["IUserMap", "LookupResult", "Outcome"]
