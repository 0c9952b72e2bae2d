import sys

from walt_node.cli import main

sys.exit(main())
