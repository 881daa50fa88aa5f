"""Child process of ``scfeeds.portal.serve_in_process`` (config on stdin, URL on stdout)."""

import asyncio
import sys

from scfeeds._portal._run import _child_main

sys.exit(asyncio.run(_child_main()))
