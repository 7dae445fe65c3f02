"""Checkpoint lineage, gated promotion and rollback."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from storage import repo
from storage.models import Checkpoint


def _chain(db, task_id, successes):
    """An SFT checkpoint followed by SI iterations, each the parent of the next."""
    ids, parent = [], None
    with db.write() as s:
        for i, sr in enumerate(successes):
            ck = repo.add_checkpoint(s, "sft" if i == 0 else "si", f"/ckpt/{i}.pt", parent_id=parent,
                                     task_id=task_id, iteration=i, metrics={"loss": 1.0 / (i + 1)},
                                     eval_success=sr, eval_episodes=None if sr is None else 50)
            ids.append(ck.id)
            parent = ck.id
    return ids


def test_lineage_follows_parents(db, task_id):
    ids = _chain(db, task_id, [0.4, 0.5, 0.6])
    with db.read() as s:
        assert [c.id for c in repo.lineage(s, ids[-1])] == ids
        assert [c.stage for c in repo.lineage(s, ids[-1])] == ["sft", "si", "si"]
        assert repo.latest_checkpoint(s, task_id=task_id).id == ids[-1]
    with pytest.raises(repo.NotFound), db.write() as s:
        repo.add_checkpoint(s, "si", "/x.pt", parent_id=999)


def test_promote_only_if_not_worse(db, task_id, users):
    a, b, c, d = _chain(db, task_id, [0.5, 0.6, 0.55, None])
    with db.write() as s:
        repo.promote(s, a)
        repo.promote(s, b, actor=users["supervisor"])
    with pytest.raises(repo.PromotionRefused, match="worse"), db.write() as s:
        repo.promote(s, c)
    with pytest.raises(repo.PromotionRefused, match="no evaluated success"), db.write() as s:
        repo.promote(s, d)
    with db.read() as s:
        assert repo.get_promoted(s, task_id).id == b
    with db.write() as s:  # configurable: a tolerance, or no gate at all
        assert repo.promote(s, c, tolerance=0.1).id == c
        assert repo.promote(s, d, require_not_worse=False).id == d
    with db.read() as s:
        assert repo.get_promoted(s, task_id).id == d
        assert sum(ck.promoted for ck in repo.list_checkpoints(s, task_id=task_id)) == 1
        log = repo.audit_log(s, action="promote")
        assert log[-2].username == "sup" and log[-2].details["previous"] == a


def test_equal_success_is_not_worse_and_promote_needs_a_supervisor(db, task_id, users):
    a, b = _chain(db, task_id, [0.5, 0.5])
    with db.write() as s:
        repo.promote(s, a)
        repo.promote(s, b)
    with pytest.raises(repo.PermissionDenied, match="supervisor"), db.write() as s:
        repo.promote(s, a, actor=users["reviewer"])


def test_rollback_to_any_earlier_checkpoint(db, task_id, users):
    a, b, c = _chain(db, task_id, [0.3, 0.6, 0.7])
    with db.write() as s:
        repo.promote(s, a)
        repo.promote(s, b)
        repo.promote(s, c)
    with db.write() as s:
        repo.rollback(s, a, actor=users["supervisor"])  # worse, but a person asked for it
    with db.read() as s:
        assert repo.get_promoted(s, task_id).id == a
        entry = repo.audit_log(s, action="rollback")[0]
        assert (entry.username, entry.target_id, entry.details["previous"]) == ("sup", str(a), c)


def test_promotion_is_per_task_and_unique(db, task_id):
    with db.write() as s:
        other = repo.create_task(s, "other", "metaworld").id
        x = repo.add_checkpoint(s, "sft", "/x.pt", task_id=task_id, eval_success=0.2).id
        y = repo.add_checkpoint(s, "sft", "/y.pt", task_id=other, eval_success=0.9).id
        g = repo.add_checkpoint(s, "sft", "/g.pt", eval_success=0.1).id  # no task: global scope
        repo.promote(s, x)
        repo.promote(s, y)
        repo.promote(s, g)
    with db.read() as s:
        assert (repo.get_promoted(s, task_id).id, repo.get_promoted(s, other).id) == (x, y)
        assert repo.get_promoted(s).id == g
    # The database itself refuses a second promoted checkpoint for a task.
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(Checkpoint(stage="si", path="/z.pt", task_id=task_id, promoted=True))
        s.flush()
