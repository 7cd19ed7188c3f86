"""Offline ToAPIs video gateway for Wan 2.6: real HTTP on loopback, real MP4 files, scripted faults.

Written from the gateway contract alone and sharing no code with ``wan_mcp.gateway`` or
``wan_mcp.core``: if both sides read the contract the same wrong way, a shared model would hide
it. Start it with :class:`wan_mcp.simulator.harness.SimulatorServer` (tests) or
``wan-mcp simulator`` (:func:`wan_mcp.simulator.harness.main`).
"""

from wan_mcp.simulator.engine import Engine, RequestLogEntry
from wan_mcp.simulator.faults import Fault
from wan_mcp.simulator.harness import SimulatorServer, main

__all__ = ["Engine", "Fault", "RequestLogEntry", "SimulatorServer", "main"]
