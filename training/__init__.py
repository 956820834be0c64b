"""StAR training: rewards, GRPO + REST on TRL, recipes (`star-train`), and the synthetic nano world whose
model is the shipped default (training/nano). Depends on `engine` and `export`; neither imports it.
"""
