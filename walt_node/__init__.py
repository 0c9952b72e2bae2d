"""walt-node: the node-side companion of a WalT testbed image."""

__version__ = "0.1.0"
