"""Installation of walt-node into a node image (`walt-node setup`).

- the image's locations come from :class:`walt_node.paths.Paths` rooted at the image
  (``--prefix``); ``Paths.inside``/``Paths.followed`` resolve them like a chroot;
- :mod:`.environment`: which Python and walt-node executable, which init system;
- :mod:`.plan`: the files, links and directories an installation consists of;
- :mod:`.imagespec`: merging template paths into ``/etc/walt/image.spec``;
- :mod:`.installer`: applying a plan (with its manifest and backups) and undoing it.
"""

from walt_node.errors import WaltNodeError

# How to get *this* walt-node into an image. Never pip-install it by name:
# on PyPI that name is upstream WalT's own walt-node 10.0, a different program.
WHEEL_HINT = ("the walt-node wheel built in its source tree with `python3 -m build` "
              "(dist/walt_node-*.whl), copied into the image")
INSTALL_COMMANDS = ("python3 -m venv /opt/walt-node && "
                    "/opt/walt-node/bin/pip install /tmp/walt_node-*.whl && "
                    "/opt/walt-node/bin/walt-node-setup")


class InstallError(WaltNodeError):
    """A problem the user can fix; the message says what and how."""
