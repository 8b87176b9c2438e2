"""Shared by the image tests: the service app's source (images/app) is importable without installing it."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_SRC = os.path.join(REPO, "images", "app")
if APP_SRC not in sys.path:
    sys.path.insert(0, APP_SRC)
