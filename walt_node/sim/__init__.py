"""A loopback WalT server simulator (logs, API sessions, web API, boot files, fake TFTP).

Usage::

    from walt_node.sim import Simulator, SimConfig, SimNode, SimImage
    with Simulator(SimConfig(nodes=[...], images=[...])) as sim:
        ...  # sim.logs_port, sim.rpc_port, sim.http_port, sim.log_records()
"""

from walt_node.sim.config import SimConfig, SimConfigError, SimImage, SimNode
from walt_node.sim.inventory import SimError
from walt_node.sim.records import ApiCall, LogRecord, format_realtime
from walt_node.sim.server import Simulator

__all__ = ["ApiCall", "LogRecord", "SimConfig", "SimConfigError", "SimError", "SimImage",
           "SimNode", "Simulator", "format_realtime"]
