"""Stage 2: self-improvement by on-policy REINFORCE on a fleet (docs/method.md, "Stage 2
practice"). ``run_practice`` runs it and tells one ``PracticeObserver`` what happens, as the
typed events of ``events``; ``PracticeConfig`` holds its settings.

    config.py      the settings, which of them a resume may change, PracticeRefused
    loop.py        run_practice: the iterations (collect, update, refine, evaluate, save)
    events.py      the events and the observer
    checks.py      the detector's threshold and the pre-practice check
    update.py      rewards, returns, the buffer's tuples and the REINFORCE update
    refinement.py  refining the reward model on labeled episodes
    evaluation.py  greedy evaluations on the selection seeds, the gain since the start
    run_files.py   the run directory
"""
from core.learning.practice.config import PRACTICE_MAY_CHANGE, PracticeConfig, PracticeRefused  # noqa: F401
from core.learning.practice.events import PracticeObserver  # noqa: F401
from core.learning.practice.loop import run_practice  # noqa: F401
