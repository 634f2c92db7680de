"""mailmoat package."""
