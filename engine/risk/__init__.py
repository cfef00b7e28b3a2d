"""Pre-trade risk: `book` (state), `validate` (REJECTED), `limits` (ESCALATED), `gate` (the order of them)."""
