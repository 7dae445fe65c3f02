"""Seed ranges: each use of the simulator draws from its own range, so no evaluation ever
runs a seed a demonstration, a selection or practice has seen. Test figures use
``EVAL_SEED0``; nothing is ever selected on them."""
DEMO_SEED0 = 0  # scripted demonstrations: 0, 1, 2, ...
EVAL_SEED0 = 1_000_000  # test evaluations (reported figures)
SELECT_SEED0 = 2_000_000  # checkpoint selection during Stage 1 and practice
SCREEN_SEED0 = 2_500_000  # bench.metaworld_screen's task screening
CHECK_SEED0 = 3_000_000  # the pre-practice detector check's held-out rollouts
REFINE_SEED0 = 5_000_000  # labeled rollouts that refine the reward model before practice
PRACTICE_SEED0 = 10_000_000  # practice episodes
