"""CellCycleGAN-style generator: the shared mask videos, textured per cell and frame by a conditional GAN."""
