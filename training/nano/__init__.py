"""The nano world: a synthetic reasoning-segmentation benchmark the project trains its nano StAR on."""
