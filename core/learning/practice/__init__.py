"""Stage 2: self-improvement by on-policy REINFORCE on a fleet (docs/method.md)."""
from core.learning.practice import loop as _loop

globals().update({k: v for k, v in vars(_loop).items() if not k.startswith("__")})  # interim, split follows
