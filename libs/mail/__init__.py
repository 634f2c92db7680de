"""Mail utilities: addresses, authors, MIME reading and editing, DSNs, DNS, DKIM signing, SRS."""
