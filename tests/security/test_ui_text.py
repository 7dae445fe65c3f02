"""User-supplied text (robot, task, user, token, file names, job errors, instructions) is shown
verbatim: never as markdown. ``ui.text.md`` escapes it; every page is run with hostile names
in the database and no markdown-rendered string may carry a live link, image or directive.

What Streamlit 1.67's frontend does with the escapes was checked in Chromium (ui/text.py):
these tests pin the escaping itself and that the pages use it."""
from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ui.text import md

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "![x](http://evil.example/t.png) [link](http://evil.example) :red[boom] <b>bold</b> :smile: $x^2$"


def _unescape(escaped: str) -> str:
    """What CommonMark shows for a string made only of text and backslash escapes (less the
    invisible word joiners that keep autolinks off)."""
    return re.sub(r"\\([" + re.escape(string.punctuation) + "])", r"\1", escaped).replace("\u2060", "")


def _live_markdown(s: str) -> list[str]:
    """Markdown constructs that would render in ``s`` (outside backslash escapes), one line."""
    plain = re.sub(r"\\.", "X", s)  # every escaped character is inert: mask it
    checks = {"link or image": r"\]\(|\[", "directive": r":[a-z/_]+[\[:]", "html": r"<[a-zA-Z/!?]",
              "code": r"`", "emphasis": r"\*|_|~", "math": r"\$", "heading": r"^\s*#", "table": r"\|",
              "entity": r"&[#a-zA-Z0-9]+;", "autolink": r"(?i)https?:|www\.|(?<!\u2060)@|<",
              "block": r"^\s*([-+=>]|\d{1,9}[.)])"}
    return [name for name, pat in checks.items() if re.search(pat, plain)]


# --- the escape ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    HOSTILE,
    "![beacon](http://evil.example/track.png)",
    "[click me](http://evil.example)",
    "[ref]: http://evil.example",
    "<http://evil.example> http://evil.example HTTPS://evil.example www.evil.example someone@evil.example",
    ":red[boom] :material/home: :smile: :blue-background[x]",
    "$x^2$ and $$\\int$$",
    "`code` ```fence```",
    "<b>bold</b> <img src=x onerror=alert(1)> <script>alert(1)</script>",
    "&lt;b&gt; &amp; &#60;",
    "**bold** __bold__ *it* _it_ ~~strike~~ ~s~",
    "# heading",
    "- item", "+ item", "1. item", "2) item", "> quote", "=== setext", "---", "***", "___",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "__CFG__ __NAME__",
    "w1/sim-0",
    "trailing backslash \\",
    "a\\[b\\]",
])
def test_escaped_text_reads_as_typed_and_renders_nothing(raw):
    out = md(raw)
    assert _live_markdown(out) == [], (raw, out)
    assert _unescape(out) == raw.replace("\n", " ")


def test_line_breaks_become_spaces_and_control_characters_go():
    assert md("one\ntwo\r\nthree\tfour\u2028five") == "one two three four five"
    assert md("a\x00b\x1bc\x7fd") == "abcd"
    assert md("line1\n# Heading\n    code\n1. item\n===\n- x") == "line1 \\# Heading     code 1. item === - x"


def test_autolinks_emoji_and_icons_get_an_invisible_word_joiner():
    """GFM autolinks, remark-emoji shortcodes and Streamlit's :material/...: icons are found in
    the text after escapes are resolved: a word joiner (U+2060) breaks them up."""
    assert md("http://x.y HTTPS://x.y www.x.y a@b.c") == (
        "http\u2060\\:\u2060//x.y HTTPS\u2060\\:\u2060//x.y www\u2060.x.y a\u2060@b.c")
    assert md(":smile: :+1: :material/home:") == "\\:\u2060smile: \\:\u2060+1: \\:\u2060material/home\\:\u2060"
    assert not re.search(r":[\w+-]+:|:material/", md(":a:b:c: :material/x: ::smile::"))
    assert "\u2060" not in md("httpd: 1.5 www wwwx.y iteration 50: x")


def test_multiline_keeps_each_line_as_typed():
    out = md("the archive was not imported:\n- [x](http://e.x).npz: bad\n# two\n3. three", multiline=True)
    lines = out.split("  \n")
    assert lines == [md("the archive was not imported:"), md("- [x](http://e.x).npz: bad"), md("# two"), md("3. three")]
    assert all(_live_markdown(line) == [] for line in lines)


def test_what_is_escaped():
    """Markdown's characters everywhere; ``- + = .`` only where a line starts (mid-line they mean
    nothing, so names like robot-0 and figures like 0.77 read as typed in the markdown source)."""
    assert md("\\`*_{}[]()#|<>~:$&!") == "".join("\\" + c for c in "\\`*_{}[]()#|<>~:$&!").replace(":", ":\u2060")
    assert md("a:b :x: end:") == "a\\:\u2060b \\:\u2060x: end\\:\u2060"
    assert md("iteration 50: greedy") == "iteration 50: greedy"
    assert md("robot-0 a+b=c 0.77 it's \"q\" 50% a/b ^ ; ? ,") == "robot-0 a+b=c 0.77 it's \"q\" 50% a/b ^ ; ? ,"
    assert md("  - x") == "  \\- x" and md("10. x") == "10\\. x" and md("1234567890. x") == "1234567890. x"
    assert md("robot 7 ünïcödé 机器人 😀 ＊［］：") == "robot 7 ünïcödé 机器人 😀 ＊［］：" # non-ASCII: no markdown meaning
    assert md(None) == "" and md(42) == "42" and md(ValueError("bad [x](y)")) == "bad \\[x\\]\\(y\\)"


# --- the pages -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A small seeded database (tests/ui/seeding.py) where everything people or robots name holds
    the hostile string: the task, its instruction family and episodes' instructions, a robot, a
    user (supervisor) who started a session, overrode and labelled, a robot-token label, a failed
    preparation job's error and message, a refine job's error and a practice job's stop reason."""
    from storage import init_db, repo
    from storage.models import Episode, Job, Task
    from tests.ui.seeding import seed

    seeded = seed(str(tmp_path_factory.mktemp("hostile") / "dojo.sqlite"), episodes=24, robots=2, steps=6,
                  frames_for=2)
    db = init_db(seeded.url)
    with db.write() as s:
        task = s.get(Task, seeded.task_id)
        task.name, task.instruction_family = HOSTILE, HOSTILE
        s.execute(update(Episode).values(instruction=HOSTILE))
        robot = repo.register_robot(s, HOSTILE, task_id=seeded.task_id)
        evil = repo.create_user(s, HOSTILE, "password123", "supervisor")
        repo.start_session(s, seeded.task_id, name=HOSTILE, params={"fleet_size": HOSTILE}, actor=evil)
        repo.override_episode(s, seeded.episode_ids[2], True, actor=evil)
        repo.label_episode(s, seeded.episode_ids[3], True, actor=evil)
        repo.create_robot_token(s, HOSTILE, actor=evil)  # robot names are checked there
        for kind, status in (("demos", "failed"), ("refine", "failed")):
            job = repo.enqueue_job(s, kind, {}, task_id=seeded.task_id, session_id=seeded.session_id)
            job.status, job.error, job.message = status, HOSTILE, HOSTILE
        practice = s.scalars(select(Job).where(Job.kind == "practice").order_by(Job.id.desc())).first()
        practice.result = {"stop_reason": HOSTILE}
        robot_id = robot.id
    db.dispose()
    return {"seeded": seeded, "robot_id": robot_id}


@pytest.fixture
def run(hostile, monkeypatch, tmp_path):
    """``run(page, user_id, **session_state)``: an AppTest of pages/<page>.py over the hostile database
    (as tests/ui/conftest.py does; the real ``__main__`` is put back afterwards)."""
    import sys

    from streamlit.testing.v1 import AppTest

    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setenv("DOJO_DB", hostile["seeded"].url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DOJO_DATA", str(tmp_path / "data"))

    def make(page: str, user_id: int, **state):
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=30)
        at.session_state["dojo_user_id"] = user_id
        for k, v in state.items():
            at.session_state[k] = v
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return make


# Elements Streamlit shows as plain text (never markdown), and fields of markdown elements that
# are plain text (selectbox options, what was typed in an input).
PLAIN_TYPES = {"text", "code", "json", "arrow_data_frame", "dataframe", "iframe", "exception", "empty"}
PLAIN_FIELDS = {"options", "default", "value", "raw_value", "placeholder", "id", "form_id", "data", "url",
                "src", "key", "script_hash", "page_script_hash", "fragment_id"}


def _proto_strings(msg, out: list[str]) -> None:
    for field, value in msg.ListFields():
        if field.name in PLAIN_FIELDS:
            continue
        if isinstance(value, str) or hasattr(value, "ListFields"):
            items = [value]
        elif hasattr(value, "values"):  # a map
            items = list(value.values())
        elif hasattr(value, "__iter__"):  # a repeated field
            items = list(value)
        else:
            continue
        for v in items:
            if isinstance(v, str):
                out.append(v)
            elif hasattr(v, "ListFields"):
                _proto_strings(v, out)


def _markdown_strings(at) -> list[str]:
    """Every string the page sends to be rendered as markdown: element bodies, labels, help texts,
    expander titles, toasts, progress texts, metric labels and values, and st.table cells."""
    out: list[str] = []

    def walk(node):
        kind = getattr(node, "type", None)
        if kind == "table":
            df = node.value
            out.extend(str(v) for v in list(df.columns) + df.to_numpy().ravel().tolist())
        elif kind not in PLAIN_TYPES and getattr(node, "proto", None) is not None:
            _proto_strings(node.proto, out)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def _assert_escaped(at, *, shown: int = 1) -> list[str]:
    texts = _markdown_strings(at)
    live = [t for t in texts if "](http" in t or ":red[" in t or "<b>" in t or ":smile:" in t
            or re.search(r"(?<!\\)\$", t)]
    assert not live, f"user text rendered as markdown: {live}"
    hits = [t for t in texts if md(HOSTILE) in t]
    assert len(hits) >= shown, f"the hostile text should appear escaped at least {shown}x, got {hits}"
    return hits


def test_tasks_page_escapes_names_errors_and_toasts(hostile, run):
    seeded = hostile["seeded"]
    at = run("tasks", seeded.user_ids["admin"])
    hits = _assert_escaped(at, shown=4)
    joined = "\n".join(hits)
    assert f"**{md(HOSTILE)}** · online" in joined  # the robot
    assert f"by {md(HOSTILE)}" in joined  # the session's user
    assert f"family **{md(HOSTILE)}**" in joined  # the task's fields
    assert any(h.startswith(md("demonstrations: failed (job")) for h in hits)  # the preparation job's error
    # Taking the robot offline toasts its name.
    btn = next(b for b in at.button if b.key == f"off{hostile['robot_id']}")
    btn.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.toast] == [f"{md(HOSTILE)} taken offline"]
    _assert_escaped(at)


def test_live_page_escapes_task_names(hostile, run):
    at = run("live", hostile["seeded"].user_ids["supervisor"])
    hits = _assert_escaped(at)
    assert any(f"({md(HOSTILE)}): running" in h for h in hits)


def test_review_page_escapes_instructions_and_users(hostile, run):
    seeded = hostile["seeded"]
    at = run("review", seeded.user_ids["reviewer"], review_episode=seeded.episode_ids[2])
    hits = _assert_escaped(at, shown=2)
    assert any(f"“{md(HOSTILE)}”" in h for h in hits)
    assert any(h.startswith("Override: success by " + md(HOSTILE)) for h in hits)


def test_training_page_escapes_job_errors_and_stop_reasons(hostile, run):
    at = run("training", hostile["seeded"].user_ids["supervisor"])
    hits = _assert_escaped(at, shown=2)
    assert any(h.startswith("Practice job") and h.endswith(md(HOSTILE)) for h in hits)
    assert any(re.fullmatch(r"job \d+: failed: " + re.escape(md(HOSTILE)), h) for h in hits)  # a refine job's error


def test_data_page_escapes_dataset_paths(hostile, run):
    seeded = hostile["seeded"]
    at = run("data", seeded.user_ids["admin"], imported=(HOSTILE, seeded.task_id))
    hits = _assert_escaped(at)
    assert any(h == f"Train Stage 1 on {md(HOSTILE)}" for h in hits)


def test_users_page_escapes_the_audit_log(hostile, run):
    at = run("users", hostile["seeded"].user_ids["admin"])
    hits = _assert_escaped(at, shown=2)
    assert md(HOSTILE) in hits  # a user column cell

