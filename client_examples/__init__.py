"""Clients of the planning server. ``client.py`` imports only numpy, httpx, msgpack and pillow."""
