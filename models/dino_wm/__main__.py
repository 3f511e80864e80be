"""python -m models.dino_wm: import a DINO-WM run (models/dino_wm/importer.py)."""

import sys

from models.dino_wm.importer import main

sys.exit(main())
