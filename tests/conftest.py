from __future__ import annotations

import sys
from pathlib import Path

# The tests import `tests.support`; the project itself is installed into the venv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
