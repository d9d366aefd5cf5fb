"""The web status page, JSON API and /metrics (`queued --http`).

Imported only when the page is on: a daemon without it pays nothing (its
dependencies, hypercorn and prometheus_client, are the optional extra
`queued[web]`). security.py holds the access rules, requests.py the
translation between URLs and the socket's requests, app.py the ASGI
application, server.py its start inside the daemon.
"""
