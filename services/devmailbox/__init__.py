"""Development mailbox: an SMTP server that writes Maildir."""
