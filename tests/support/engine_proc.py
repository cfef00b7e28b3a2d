"""Real engine processes for tests (see wojak/procs.py)."""
from wojak.procs import EngineProcess, nifty_fut, write_config

__all__ = ["EngineProcess", "nifty_fut", "write_config"]
