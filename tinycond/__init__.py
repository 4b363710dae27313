"""tinycond: conditional computation built by hand in NumPy.

Mixtures of experts, decision-tree routers and adaptive computation time,
each with a hand-written backward pass checked by finite differences.
"""

__version__ = "0.1.0"
