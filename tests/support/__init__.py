"""Helpers shared by every test suite: real engine processes, free ports, waiting."""
