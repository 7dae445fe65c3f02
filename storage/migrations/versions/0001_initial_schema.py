"""initial schema: every table of the first version (tasks, robots, sessions, episodes,
steps, frames, checkpoints, jobs, metrics, detector_quality, users, audit_log).

Frozen: later schema changes are new revisions, never edits here.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 05:22:04.506461
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('backend', sa.String(length=64), nullable=False),
    sa.Column('env_config', sa.JSON(), nullable=False),
    sa.Column('instruction_family', sa.String(length=200), nullable=True),
    sa.Column('detector_threshold', sa.Float(), nullable=True),
    sa.Column('detector_patience', sa.Integer(), nullable=False),
    sa.Column('calibration', sa.JSON(), nullable=True),
    sa.Column('fleet_size', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('detector_patience >= 1', name=op.f('ck_tasks_patience_positive')),
    sa.CheckConstraint('fleet_size >= 0', name=op.f('ck_tasks_fleet_size_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('name', name=op.f('uq_tasks_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_login_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'reviewer', 'supervisor', 'admin')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_audit_log_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_action'), 'audit_log', ['action'], unique=False)
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.create_index('ix_audit_log_target', 'audit_log', ['target_type', 'target_id'], unique=False)
    op.create_index(op.f('ix_audit_log_user_id'), 'audit_log', ['user_id'], unique=False)

    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=8), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('eval_success', sa.Float(), nullable=True),
    sa.Column('eval_episodes', sa.Integer(), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=False),
    sa.Column('promoted_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("stage IN ('sft', 'si')", name=op.f('ck_checkpoints_stage')),
    sa.ForeignKeyConstraint(['parent_id'], ['checkpoints.id'], name=op.f('fk_checkpoints_parent_id_checkpoints'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_checkpoints_task_id_tasks'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints'))
    )
    op.create_index(op.f('ix_checkpoints_parent_id'), 'checkpoints', ['parent_id'], unique=False)
    op.create_index('ix_checkpoints_task_promoted', 'checkpoints', ['task_id', 'promoted'], unique=False)
    # At most one promoted checkpoint per task (NULL task = global); autogenerate cannot see
    # expression indexes, so this one is written by hand.
    op.create_index('uq_checkpoints_one_promoted', 'checkpoints', [sa.text('coalesce(task_id, 0)')], unique=True,
                    sqlite_where=sa.text('promoted = 1'), postgresql_where=sa.text('promoted'))

    op.create_table('robots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('last_seen', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('sim', 'remote')", name=op.f('ck_robots_kind')),
    sa.CheckConstraint("status IN ('online', 'offline', 'paused', 'stopped')", name=op.f('ck_robots_status')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_robots_task_id_tasks'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_robots')),
    sa.UniqueConstraint('name', name=op.f('uq_robots_name'))
    )
    op.create_index(op.f('ix_robots_task_id'), 'robots', ['task_id'], unique=False)

    op.create_table('sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'paused', 'stopped', 'finished')", name=op.f('ck_sessions_status')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_sessions_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    op.create_index(op.f('ix_sessions_task_id'), 'sessions', ['task_id'], unique=False)

    op.create_table('detector_quality',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('patience', sa.Integer(), nullable=True),
    sa.Column('tp', sa.Integer(), nullable=False),
    sa.Column('fp', sa.Integer(), nullable=False),
    sa.Column('fn', sa.Integer(), nullable=False),
    sa.Column('tn', sa.Integer(), nullable=False),
    sa.Column('n_labeled', sa.Integer(), nullable=False),
    sa.Column('precision', sa.Float(), nullable=True),
    sa.Column('recall', sa.Float(), nullable=True),
    sa.Column('computed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_detector_quality_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_detector_quality_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_detector_quality'))
    )
    op.create_index('ix_detector_quality_checkpoint_threshold', 'detector_quality', ['checkpoint_id', 'threshold'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('state', sa.JSON(), nullable=True),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("kind IN ('demos', 'sft', 'practice', 'eval')", name=op.f('ck_jobs_kind')),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name=op.f('ck_jobs_status')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_jobs_session_id_sessions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_jobs_task_id_tasks'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_claimed_by_status', 'jobs', ['claimed_by', 'status'], unique=False)
    op.create_index(op.f('ix_jobs_session_id'), 'jobs', ['session_id'], unique=False)
    op.create_index('ix_jobs_status_priority', 'jobs', ['status', 'priority', 'id'], unique=False)
    op.create_index(op.f('ix_jobs_task_id'), 'jobs', ['task_id'], unique=False)

    op.create_table('episodes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.String(length=200), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('robot_id', sa.Integer(), nullable=True),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('instruction', sa.Text(), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('abort_reason', sa.Text(), nullable=True),
    sa.Column('detector_success', sa.Boolean(), nullable=True),
    sa.Column('detector_step', sa.Integer(), nullable=True),
    sa.Column('detector_threshold', sa.Float(), nullable=True),
    sa.Column('final_d', sa.Float(), nullable=True),
    sa.Column('min_d', sa.Float(), nullable=True),
    sa.Column('gt_success', sa.Boolean(), nullable=True),
    sa.Column('length', sa.Integer(), nullable=True),
    sa.Column('total_return', sa.Float(), nullable=True),
    sa.Column('override_success', sa.Boolean(), nullable=True),
    sa.Column('override_by', sa.String(length=100), nullable=True),
    sa.Column('override_at', sa.DateTime(), nullable=True),
    sa.Column('label_success', sa.Boolean(), nullable=True),
    sa.Column('label_by', sa.String(length=100), nullable=True),
    sa.Column('label_at', sa.DateTime(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("source IN ('demo', 'practice', 'eval')", name=op.f('ck_episodes_source')),
    sa.CheckConstraint("status IN ('running', 'finished', 'aborted')", name=op.f('ck_episodes_status')),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_episodes_checkpoint_id_checkpoints'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_episodes_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['robot_id'], ['robots.id'], name=op.f('fk_episodes_robot_id_robots'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_episodes_session_id_sessions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_episodes_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_episodes')),
    sa.UniqueConstraint('uid', name=op.f('uq_episodes_uid'))
    )
    op.create_index('ix_episodes_checkpoint_status', 'episodes', ['checkpoint_id', 'status'], unique=False)
    op.create_index('ix_episodes_ended_at', 'episodes', ['ended_at'], unique=False)
    op.create_index(op.f('ix_episodes_job_id'), 'episodes', ['job_id'], unique=False)
    op.create_index('ix_episodes_label_status', 'episodes', ['label_success', 'status'], unique=False)
    op.create_index('ix_episodes_robot_status', 'episodes', ['robot_id', 'status'], unique=False)
    op.create_index('ix_episodes_session_status', 'episodes', ['session_id', 'status'], unique=False)
    op.create_index('ix_episodes_status_worker', 'episodes', ['status', 'worker'], unique=False)
    op.create_index('ix_episodes_task_ended', 'episodes', ['task_id', 'ended_at'], unique=False)

    op.create_table('metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('x', sa.Float(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_metrics_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_metrics_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_metrics_session_id_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_metrics_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics'))
    )
    op.create_index('ix_metrics_checkpoint_name', 'metrics', ['checkpoint_id', 'name'], unique=False)
    op.create_index('ix_metrics_name_x', 'metrics', ['name', 'x'], unique=False)
    op.create_index('ix_metrics_session_name_x', 'metrics', ['session_id', 'name', 'x'], unique=False)
    op.create_index('ix_metrics_task_name_x', 'metrics', ['task_id', 'name', 'x'], unique=False)

    op.create_table('frames',
    sa.Column('episode_id', sa.Integer(), nullable=False),
    sa.Column('t', sa.Integer(), nullable=False),
    sa.Column('media_type', sa.String(length=32), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['episode_id'], ['episodes.id'], name=op.f('fk_frames_episode_id_episodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('episode_id', 't', name=op.f('pk_frames'))
    )
    op.create_table('steps',
    sa.Column('episode_id', sa.Integer(), nullable=False),
    sa.Column('t', sa.Integer(), nullable=False),
    sa.Column('action', sa.JSON(), nullable=True),
    sa.Column('d', sa.Float(), nullable=True),
    sa.Column('reward', sa.Float(), nullable=True),
    sa.Column('detector_count', sa.Integer(), nullable=True),
    sa.Column('detector_fired', sa.Boolean(), nullable=False),
    sa.Column('frame_t', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['episode_id'], ['episodes.id'], name=op.f('fk_steps_episode_id_episodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('episode_id', 't', name=op.f('pk_steps'))
    )


def downgrade() -> None:
    op.drop_table('steps')
    op.drop_table('frames')
    op.drop_table('metrics')
    op.drop_table('episodes')
    op.drop_table('jobs')
    op.drop_table('detector_quality')
    op.drop_table('sessions')
    op.drop_table('robots')
    op.drop_table('checkpoints')
    op.drop_table('audit_log')
    op.drop_table('users')
    op.drop_table('tasks')
