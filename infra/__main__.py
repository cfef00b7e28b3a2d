"""Pulumi entry point (`main: infra/` in Pulumi.yaml): read config, build, export. Nothing else."""

import os
import sys

try:
    import infra  # noqa: F401  # installed (editable) with the repo
except ImportError:
    # run by the Pulumi host from infra/ without the repo installed: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pulumi  # noqa: E402

from infra import config, program  # noqa: E402

for _key, _value in program.build(config.load()).items():
    pulumi.export(_key, _value)
