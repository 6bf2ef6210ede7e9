"""Small composable pieces of neural fields: encodings, MLPs, contraction, samplers, renderers, losses.

Algorithms and defaults follow nerfstudio / Instant-NGP (tiny-cuda-nn); the code is our own, plain torch.
`implementation="tcnn"` routes `HashEncoding`, `SHEncoding` and `MLP` to tinycudann (see `_tcnn.py`).
"""
