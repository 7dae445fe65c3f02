"""The Tasks page's New task section: a supervisor searches the catalog and creates a task
through ``core.cli tasks add`` (a subprocess); a refused configuration shows the checker's
message and saves nothing; the created task is selected and audited as its creator."""
from __future__ import annotations

from storage import init_db, repo
from ui import new_task


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def _by_label(items, label):
    return next(w for w in items if w.label.startswith(label))


def _names(url):
    db = init_db(url)
    with db.read() as s:
        names = [t.name for t in repo.list_tasks(s)]
    db.dispose()
    return names


def test_a_supervisor_creates_a_tabletop_task_through_the_form(app, seeded):
    before = _names(seeded.url)
    at = _ok(app("tasks", "supervisor", timeout=120).run())
    _ok(_by_label(at.toggle, "New task").set_value(True).run())
    _ok(_by_label(at.text_input, "Search the catalog").input("block2location lone red moon").run())
    pick = _by_label(at.selectbox, "Start from")
    assert pick.options == ["[tabletop] Tabletop lone object: the red moon alone"]
    _ok(_by_label(at.text_input, "Search the catalog").input("block2location").run())
    pick = _by_label(at.selectbox, "Start from")
    assert pick.options[0] == "[tabletop] Tabletop Block2Location: push a block to a place"
    assert _by_label(at.selectbox, "Family").value == "block2location"
    # refused: Block2Block with one object; the checker's words are shown, nothing is saved
    _by_label(at.selectbox, "Family").set_value("block2block")
    _by_label(at.multiselect, "Blocks on the table").set_value(["red moon"])
    _by_label(at.text_input, "Name").input("one block")
    _ok(next(b for b in at.button if b.label == "Create").click().run())
    assert any("needs at least 2 objects" in e.value for e in at.error), [e.value for e in at.error]
    assert _names(seeded.url) == before
    # created: a name with markdown in it is shown as typed
    name = "Push *two* [blocks](x)"
    _by_label(at.selectbox, "Family").set_value("block2location")
    _by_label(at.multiselect, "Blocks on the table").set_value(["red moon", "blue cube"])
    _by_label(at.text_input, "Name").input(name)
    _by_label(at.number_input, "Image size").set_value(32)
    _by_label(at.text_area, "Description").input("made by the page test")
    _ok(next(b for b in at.button if b.label == "Create").click().run())
    assert name in _names(seeded.url)
    success = next(s.value for s in at.success if "created" in s.value)
    assert "\\*two\\* \\[blocks\\]\\(x\\)" in success
    names = sorted(_names(seeded.url))
    task_pick = next(s for s in at.selectbox if s.label == "Task")
    assert task_pick.value == names.index(name)  # the new task is selected
    db = init_db(seeded.url)
    with db.read() as s:
        task = repo.get_task(s, name)
        assert task.env_config == {"blocks": ["red moon", "blue cube"], "objects": [], "family": "block2location",
                                   "image_size": 32, "max_steps": 80}
        assert task.description == "made by the page test"
        entry = repo.audit_log(s, action="create_task", limit=1)[0]
        assert entry.username == "supervisor" and entry.target_id == str(task.id)
    db.dispose()


def test_reviewers_get_no_new_task_section(app):
    at = _ok(app("tasks", "reviewer").run())
    assert not any(t.label == "New task" for t in at.toggle)


def test_add_args_for_each_kind():
    remote = {"kind": "remote", "backend": "remote", "env_config": {}}
    args = new_task.add_args(remote, {"name": " arm ", "height": 48, "width": 64, "proprio_dim": 3, "action_dim": 2,
                                      "action_low": "-1,-0.5", "action_high": "1", "max_steps": 60,
                                      "phrasings": "pick it up\n\nlift it"}, "sup")
    assert args == ["add", "--name", "arm", "--backend", "remote", "--max-steps", "60", "--camera", "48x64",
                    "--proprio-dim", "3", "--action-dim", "2", "--action-low=-1,-0.5", "--action-high=1",
                    "--instruction", "pick it up", "--instruction", "lift it", "--by", "sup"]
    mw = {"kind": "metaworld", "backend": "metaworld", "env_config": {"task": "drawer-close-v3"}}
    assert new_task.add_args(mw, {"name": "d", "image_size": 64, "max_steps": 110}, None) == [
        "add", "--name", "d", "--backend", "metaworld", "--max-steps", "110", "--image-size", "64",
        "--task", "drawer-close-v3"]
    gym = {"kind": "gym", "backend": "gym", "env_config": {"env_id": "Reacher-v5"}}
    args = new_task.add_args(gym, {"name": "r", "extra": '{"success_key": "is_success"}', "phrasings": "reach"}, None)
    assert args[-6:] == ["--env-id", "Reacher-v5", "--env-config", '{"success_key": "is_success"}',
                         "--instruction", "reach"]


def test_error_text_keeps_the_checker_lines_and_drops_shutdown_noise():
    stderr = ("UserWarning: something\nerror: the backend check refused this configuration:\n"
              "  ERROR: action space is Discrete(2)\nException ignored in: <function X.__del__>\nTraceback ...\n")
    assert new_task.error_text(stderr, 2) == ("the backend check refused this configuration:\n"
                                              "  ERROR: action space is Discrete(2)")
    assert "exit code 1" in new_task.error_text("boom\n", 1)
