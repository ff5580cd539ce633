"""Puts the repository root on sys.path, so that benchmark files can import the suites as
``benchmarks.<suite>``: ``benchmarks.unbatched`` imports ``benchmarks.e2e`` relatively, which needs
the package path, whereas pytest (rootdir-less ``benchmarks/``) puts only this directory there."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
