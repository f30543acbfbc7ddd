"""Backups and restores: encrypted archives of the stores and the audit trail (archive.py,
take.py), their schedule (schedule.py), and restores that replay the erasure ledger
(restore.py). docs/backup-and-erasure.md."""

from .archive import ArchiveError
from .restore import Restored, Target, restore
from .schedule import every
from .take import back_up, prune, take

__all__ = ["ArchiveError", "Restored", "Target", "back_up", "every", "prune", "restore", "take"]
