"""Plugin namespace that ParlAI's loader reaches through parlai_conkd._startup (see docs/architecture.md).

extend_path lets a separate directory named like this package on sys.path add entries
(this is how tests mount a throwaway plugin, and how a user can add private ones).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
