"""m3u-proxy: an IPTV stream proxy."""

__version__ = "0.1.0"
