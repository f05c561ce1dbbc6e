"""The dashboard's page, style and script (served by :mod:`outloop.dashboard`, no CDN)."""
