"""`python -m sdarts`: what was built and which mixed-sum backends can run here."""

from .ops.backends import describe

for key, value in describe().items():
    print(f"{key:20s} {value}")
