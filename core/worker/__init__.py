"""The worker (``python -m core.worker``): claims jobs from the database and runs them, records
practice, serves live telemetry and remote robots. Kept import-light: the web app's launcher
imports ``core.worker.telemetry`` without pulling in torch.

    runner.py             Worker: claim, run, heartbeat, recover; one bad job never stops it
    jobs/                 one module per job kind (demos, sft, practice, evaluate, refine)
    params.py             each kind's params, defaults from the run configurations
    practice_recorder.py  practice's events -> episodes, checkpoints, metrics, telemetry
    supervised_fleet.py   the fleet the learner sees (robots that fail are parked)
    checkpoints.py        start checkpoint, reward model, promotion
    refine_from_labels.py a reward model re-trained on a session's judged episodes
    telemetry.py, remote.py  the websocket endpoints /telemetry and /robot
    main.py               the command line
"""
