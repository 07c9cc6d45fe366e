"""Test infrastructure shared by every package (dev only)."""
