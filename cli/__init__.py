"""The ``mailmoat`` command: runs and supervises services, checks policies, reads records."""
