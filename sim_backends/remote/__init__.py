"""The remote-robot backend: a robot (or a remote simulator) joins a worker's fleet over
websocket. Server side: core/worker/remote.py; protocol: docs/remote_protocol.md; reference client
(wrapping a local simulator): ``python -m sim_backends.remote.client``."""
