"""The web console: sign-in, accounts and rights, the message trace and the audit log (issue 17)."""
