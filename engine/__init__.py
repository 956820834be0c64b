"""StAR Desktop inference engine: protocol, policy, segmenter, voting, metrics, data readers and the `star` CLI.

Importable alone: no Qt, no TRL, no exporter.
"""

__version__ = "0.1.0"

# Importing it changes nothing in the process: the Hugging Face libraries are set offline by each command's
# main and before each model load (engine.offline), not at import.
