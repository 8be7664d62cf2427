"""conjure_actors: run ComfyUI workflows on rented RunComfy GPUs, event-sourced, on trio.

Layers (imports point from the later to the earlier, never back):
``eventlog`` (separate package) < ``errors``/``clock`` < ``domain`` (pure) and ``runtime``
(generic actors) < ``clients`` and ``sim`` < ``actors`` < ``testing`` and ``cli``.
"""

from conjure_actors.errors import ConjureError

__all__ = ["ConjureError", "__version__"]
__version__ = "0.1.0"
