"""The `ferry` command: one more front door onto the same domain code as the operator."""
