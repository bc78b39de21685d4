"""chenyu_assets: async SDK, emulator and bulk-ingest CLI for asset libraries."""

from chenyu_assets._version import __version__

__all__ = ["__version__"]
