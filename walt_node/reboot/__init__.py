"""Fast, safe reboots.

- :mod:`.ipxe`: pure iPXE interpreter, scripts -> BootPlan;
- :mod:`.source`: the one fetch source (fake TFTP, HTTP, or a local directory);
- :mod:`.binding`: which image the node is bound to now, is kexec allowed;
- :mod:`.kexec`: thin executor (sanity checks, ``kexec -l``, jump, OS reboot);
- :mod:`.kexec_reboot`: the whole kexec reboot attempt, with its fallback;
- :mod:`.node_reboot`: what /bin/walt-reboot does (flush, hooks, method).

Their commands live in :mod:`walt_node.commands`.
"""
