"""BVDM (Yilmaz et al. 2024): DDPM textures + VoxelMorph flow over synthetic mask videos.

Layout as in diffusers: ``data`` (crops, normalisation), ``ddpm`` (model + scheduler + training),
``flow`` (VoxelMorph model + training), ``sampler`` (inference pipeline), ``generator`` (the
registered ``bvdm`` generator). Import the submodules directly (torch is heavy).
"""
