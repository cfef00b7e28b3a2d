"""Wojak's platform: one Pulumi program (AWS + GCP + optional Kubernetes) and its ops tools.

Importing this package creates no resources; `infra.program.build()` does, inside a Pulumi run.
"""
