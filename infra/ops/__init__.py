"""Ops tools: spot fault injection and on-call access commands. Plain Python, no Pulumi needed."""
