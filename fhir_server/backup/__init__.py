"""Backups and restores: encrypted archives of the stores and the audit trail (archive.py,
take.py), their schedule (schedule.py), and restores that replay the erasure ledger
(restore.py), and the copy of the keys that opens them (keys.py). docs/backup-and-erasure.md."""

from .archive import ArchiveError
from .keys import back_up_keys
from .restore import Restored, Target, restore
from .schedule import every
from .take import back_up, prune, take, taken_at

__all__ = ["ArchiveError", "Restored", "back_up_keys", "Target", "back_up", "every", "prune", "restore", "take",
           "taken_at"]
