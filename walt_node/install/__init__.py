"""Installation of walt-node into a node image (`walt-node setup`).

- :mod:`.rootfs`: reach a path of the image from the host, as the image sees it;
- :mod:`.environment`: which Python and walt-node executable, which init system;
- :mod:`.plan`: the files, links and directories an installation consists of;
- :mod:`.imagespec`: merging template paths into ``/etc/walt/image.spec``;
- :mod:`.installer`: applying a plan (with its manifest and backups) and undoing it.
"""


class InstallError(RuntimeError):
    """A problem the user can fix; the message says what and how."""
