"""GDPR operations on a person's record: access and portability (`$everything`), the
human-readable exports (PDF, CSV) and the physicians' referral spreadsheets (docs/privacy.md)."""
