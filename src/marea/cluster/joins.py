"""Join secrets moved to `marea.profiles.joins` (each batch profile owns how its workers join); kept importable
here for the cluster maker's callers."""

from marea.profiles.joins import JoinSecrets, make_join_secrets

__all__ = ["JoinSecrets", "make_join_secrets"]
