"""nerfacto (nerfstudio's default NeRF): hash-grid field, proposal sampling, volume rendering."""
