"""``python -m benchmarks``: run every workload and print the Markdown table."""

import sys

from .runner import main

sys.exit(main())
