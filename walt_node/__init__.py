"""walt-node: the node-side companion of a WalT testbed image."""

__version__ = "1!0.2.0"
