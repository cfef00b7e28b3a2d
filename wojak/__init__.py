"""Wojak's command line and single-host mode: wires the engine, the sidecars and the platform together."""
