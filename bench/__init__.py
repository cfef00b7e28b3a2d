"""Benchmarks: `engine_bench` (wojak bench) and `sidecar_bench` (each source through its real server)."""
