"""Helpers for the supervisor web app (app.py, pages/): database access, log-in and roles,
read queries the storage layer does not have, chart builders, the live-feed component and
dataset import/export.

Nothing here imports torch or MuJoCo: the UI process stays small and starts fast. Pages
stay thin and call into these modules, which have their own tests (tests/ui/).
"""
