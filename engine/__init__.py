"""StAR Desktop inference engine: protocol, policy, segmenter, voting, metrics, data readers and the `star` CLI.

Importable alone: no Qt, no TRL, no exporter.
"""

__version__ = "0.1.0"
