"""Antispam stage: sender authentication, content scoring and the SCL verdict."""
