"""``python -m scfeeds._service worker ...``: the service commands without the main CLI."""

import sys

from scfeeds._service._cli import main

sys.exit(main())
