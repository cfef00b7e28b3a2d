"""Real engine and sidecar processes for tests (see wojak/procs.py)."""
from wojak.procs import EngineProcess, SidecarProcess, nifty_fut, write_config

__all__ = ["EngineProcess", "SidecarProcess", "nifty_fut", "write_config"]
