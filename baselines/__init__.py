"""Classical members. Each is a small class obeying hybrid.contract; no torch."""
