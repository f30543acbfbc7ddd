"""The platform's own workflows on top of the FHIR services: trial referrals (referral.py),
their frozen records (snapshot.py), what a withdrawn consent does to them (withdrawal.py), and
the definitions we publish (definitions.py). docs/referrals.md describes them for clients."""
