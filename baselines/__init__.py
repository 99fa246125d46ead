"""Classical members. Each is a small class obeying kernel.contract; no torch."""
