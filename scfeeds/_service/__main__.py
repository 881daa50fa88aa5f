"""``python -m scfeeds._service worker ...``: the service commands without the main CLI."""

import sys

from scfeeds._service._cli import main

# The guard lets forkserver parse children import this module without running the worker
# again, so `--parse-pool auto` parses cXML in processes here as under `scfeeds worker`.
if __name__ == "__main__":
    sys.exit(main())
