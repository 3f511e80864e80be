"""DINO-WM (Zhou et al. 2024) runs imported as this project's model artifacts.

    python -m models.dino_wm RUN_DIR --encoder-weights dinov2_vits14_pretrain.pth --stats stats.json --out model.pt

checkpoint.py  reads a DINO-WM training checkpoint (whole pickled modules) without running its code
stats.py       the action/proprio statistics file and its provenance
published.py   numbers published in DINO-WM's repository (planner settings, PushT constants)
importer.py    maps the run's weights and hydra.yaml onto `models.WorldModel` and writes the artifact

See docs/dino_wm_import.md.
"""
