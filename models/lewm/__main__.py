"""python -m models.lewm: import a published LeWM checkpoint (models/lewm/importer.py)."""

import sys

from models.lewm.importer import main

sys.exit(main())
