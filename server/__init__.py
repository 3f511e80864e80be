"""HTTP planning server: transport, validation, sessions and metrics around ``planning.plan``.

``python -m server --help`` lists the settings; ``server.app.create_app``
builds the ASGI app for embedding (uvicorn, Ray Serve ingress, tests).
"""
