"""Every repository function in one namespace, for callers that prefer ``repo.claim_job(s, ...)``.

The functions live in one module per concept (fleet, jobs, episodes, checkpoints, metrics,
queries, auth); all take a SQLAlchemy Session as first argument and never commit: the caller
owns the transaction (``with db.write() as s:`` / ``with db.read() as s:``).
"""
from storage.auth import (PERMISSIONS, AuthError, PermissionDenied, audit, audit_log, authenticate, can,  # noqa: F401
                          create_user, get_user, list_users, require_role, set_disabled, set_password,
                          set_role)
from storage.checkpoints import (PromotionRefused, add_checkpoint, get_checkpoint, get_promoted,  # noqa: F401
                                 latest_checkpoint, lineage, list_checkpoints, promote, rollback,
                                 set_evaluation)
from storage.credentials import (CredentialError, create_robot_token, list_robot_tokens,  # noqa: F401
                                 revoke_robot_token)
from storage.episodes import (EpisodeError, FinishResult, abort_episode, abort_running_episodes,  # noqa: F401
                              episode_curve, episode_outcomes, episode_override, episode_steps,
                              finish_episode, frame_times, get_episode, get_episode_by_uid, get_frame,
                              label_episode, list_episodes, override_episode, start_episode,
                              steps_from_arrays)
from storage.tasks import (Control, InvalidTransition, NotFound, control_state, create_task,  # noqa: F401
                           finish_session, get_or_create_task, get_robot, get_session, get_task,
                           list_robots, list_sessions, list_tasks, mark_stale_robots_offline,
                           pause_session, register_robot, resume_session, set_robot_status,
                           set_session_status, start_session, stop_session, touch_robot, update_task)
from storage.jobs import (JobError, cancel_job, claim_job, enqueue_job, fail_job, finish_job,  # noqa: F401
                          get_job, heartbeat, list_jobs, recover_worker, requeue_job,
                          requeue_stale_jobs, set_progress)
from storage.metrics import (apply_threshold_from_labels, compute_detector_quality,  # noqa: F401
                             detector_quality_history, first_detection, labeled_sessions, log_metric, log_metrics,
                             metric_names, metric_series, replay_detector, sweep_judged, sweep_thresholds,
                             threshold_sweep)
from storage.queries import (ReviewItem, SuccessStats, episodes_per_hour, review_backlog,  # noqa: F401
                             review_queue, robot_summary, status_counts, success_by_checkpoint)
