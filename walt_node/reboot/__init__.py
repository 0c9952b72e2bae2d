"""Fast, safe reboots (issue 4).

- :mod:`.ipxe`: pure iPXE interpreter, scripts -> BootPlan;
- :mod:`.source`: the one fetch source (fake TFTP, HTTP, or a local directory);
- :mod:`.binding`: which image the node is bound to now, is kexec allowed;
- :mod:`.kexec`: thin executor (sanity checks, ``kexec -l``, jump, OS reboot);
- :mod:`.kexec_cmd`, :mod:`.plan_cmd`, :mod:`.reboot_cmd`: the commands.
"""
