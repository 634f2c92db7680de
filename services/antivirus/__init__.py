"""Antivirus stage: ClamAV scanning and built-in attachment checks."""
