"""What the gateway records about messages: the message trace and the quarantine."""
