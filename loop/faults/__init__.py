"""The fault suite: scenarios that break the service in real processes and count what survives
(docs/faults.md); used by tests/loop/faults and bench/reliability.py."""
