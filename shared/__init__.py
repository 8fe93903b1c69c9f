"""alai-fleet's shared library: config, logging, metrics, runtime, SQLite, notifications, Mission
Control. Nothing in it may import a daemon's runtime code (only section models).

``__version__`` is the release's git tag (setuptools-scm writes ``shared/_version.py`` when the
package is built or installed); a tree that was never built says ``0.0.0+unknown``."""

try:
    from shared._version import __version__ as __version__
except ImportError:  # a source tree used without `pip install`
    __version__ = "0.0.0+unknown"
