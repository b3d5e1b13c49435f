"""
The gateway's HTTP API listener (health and metrics now; audit, sessions,
reviews and the console next).
"""

from hoopgw.api._site import APISite, make_api_site

__all__ = ["APISite", "make_api_site"]
