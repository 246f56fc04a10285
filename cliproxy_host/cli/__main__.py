"""`python -m cliproxy_host.cli`: the `cliproxy-host` command."""

import sys

from . import main

sys.exit(main())
