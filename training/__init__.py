"""StAR training: rewards, GRPO + REST on TRL, recipes, and the synthetic nano world.

Not built yet (issues: training, nano world); this package holds its place in the layout.
"""
