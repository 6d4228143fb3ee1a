"""Pictures of diagrams, as the paper draws them (`render.py`)."""
