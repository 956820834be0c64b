"""StAR Desktop inference engine: protocol, policy, segmenter, voting, metrics, data readers and the `star` CLI.

Importable alone: no Qt, no TRL, no exporter.
"""

__version__ = "0.1.0"

from .offline import enforce_offline as _enforce_offline

# The project never downloads: the Hugging Face libraries are set offline for any process that uses it.
_enforce_offline()
