"""Rendering a trained neural field along a camera trajectory (nerfstudio's ns-render): `render.py`."""
