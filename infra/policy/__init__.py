"""The platform's invariants as a pulumi-policy pack (`pulumi preview --policy-pack infra/policy`).

`rules.py` holds pure validators (testable on recorded resources); `__main__.py` wraps them in a
MANDATORY PolicyPack. Importing this package never starts the policy server.
"""
