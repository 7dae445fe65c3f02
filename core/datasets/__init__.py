"""Dataset formats other than Dojo's own (``core/learning/dataset.py``), read and written
without torch, so the web app (ui/, pages/) may import this package too.

``lerobot``: LeRobot v3.0 datasets in (``read_lerobot``, ``import_lerobot``) and out
(``lerobot_export.export_lerobot_v3``); ``from_db``: stored episodes as export input."""
