"""The platform's own workflows on top of the FHIR services: trial referrals (referral.py),
their frozen records (snapshot.py), what a withdrawn consent does to them (withdrawal.py), the
definitions we publish (definitions.py), and the ECLAIRE trial catalogue (catalogue.py, its
site statuses in catalogue_sites.py, its pull from another base in sync.py).
docs/referrals.md and docs/catalogue.md describe them for clients."""
