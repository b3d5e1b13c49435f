"""
The gateway's HTTP API listener: health, metrics, reviews and access
grants.
"""

from hoopgw.api._site import APISite, make_api_site

__all__ = ["APISite", "make_api_site"]
