"""A failed ``demos`` or ``sft`` leaves nothing behind (security review, item 7).

Every bad input is refused with exit code 2 and an error naming the problem and the fix,
before anything is created: no dataset.json claiming a block that does not exist, no empty
run folder, no ``<out>.partial-<pid>`` sibling, no parent folders, and a folder that was
there before is left byte for byte as it was. Runs ``core.cli.main`` in-process, as
tests/core/test_cli.py does; each case takes well under a second except the few that run
the expert or a training step on tiny sizes."""
from __future__ import annotations

import json

import pytest

import core.learning.demos as demos_mod
import core.learning.sft as sft_mod
from core.cli import main
from core.learning.dataset import list_episode_files, read_meta, write_episode, write_meta
from tests.core.learning.helpers import INSTRUCTIONS, make_episode

TINY_ENV = {"image_size": 32}
# Smallest model the CLI can build: seconds per epoch on a 2-core box, no text-model load.
TINY_SFT = ["--epochs", "1", "--batch-size", "4", "--d-model", "32", "--n-layers", "1", "--stg-cap", "10",
            "--text-encoder", "scratch", "--eval-every", "0", "--device", "cpu", "--threads", "1", "--quiet"]


def _snapshot(root) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime: 'untouched' means equal snapshots."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(parent, name: str) -> list[str]:
    return sorted(p.name for p in parent.glob(f"{name}*")) if parent.exists() else []


def _dataset(root, n: int = 3, env_config: dict | None = None):
    """A synthetic dataset in the real format (no simulator)."""
    write_meta(root, {"backend": "tabletop", "env_config": env_config or TINY_ENV, "seed0": 0, "created": "x"})
    for seed in range(n):
        write_episode(root, make_episode(seed=seed, T=4, size=32, instruction=INSTRUCTIONS[seed % 2]))
    return root


def _fails(argv: list[str], capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    for f in fragments:
        assert f in err, (f, err)
    return err


# --- demos ---------------------------------------------------------------------------------

GIRAFFE = json.dumps({"blocks": ["purple giraffe", "red moon"], **TINY_ENV})

BAD_DEMOS = {
    "unknown block": (["--env-config", GIRAFFE], ["tabletop:block2block", "'purple giraffe'", "choose from",
                                                  "red moon", "--env-config"]),
    "unknown object": (["--family", "block2location", "--env-config", '{"objects": ["unicorn"]}'],
                       ["tabletop:block2location", "'unicorn'", "banana"]),
    "unknown config key": (["--env-config", '{"colour": "red"}'], ["'colour'", "--env-config"]),
    "image too small": (["--image-size", "8"], ["image_size=8", "16..512"]),
    "unknown backend": (["--backend", "nonsense"], ["'nonsense'", "tabletop", "--backend"]),
    "zero episodes": (["--n", "0"], ["--n", "at least 1", "got 0"]),
    "negative seed": (["--seed0", "-1"], ["--seed0", "0 or more"]),
    "no workers": (["--workers", "0"], ["--workers", "at least 1"]),
}


def _demos_argv(out, extra: list[str]) -> list[str]:
    argv = ["demos", "--out", str(out), "--n", "1", "--workers", "1", "--image-size", "32", "--quiet"]
    return argv + extra  # later options win: extra may override --n, --workers, --image-size


@pytest.mark.parametrize("case", sorted(BAD_DEMOS))
def test_demos_refuses_a_bad_request_and_creates_nothing(case, tmp_path, capsys):
    extra, fragments = BAD_DEMOS[case]
    out = tmp_path / "new" / "deeper" / "ds"
    _fails(_demos_argv(out, extra), capsys, *fragments)
    assert not (tmp_path / "new").exists()  # not the dataset, nor a partial sibling, nor its parents


@pytest.mark.parametrize("case", ["unknown block", "zero episodes", "unknown backend", "other options"])
def test_demos_leaves_an_existing_dataset_untouched(case, tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    before = _snapshot(root)
    extra, fragments = BAD_DEMOS[case] if case in BAD_DEMOS else (["--image-size", "48"], ["another --out"])
    _fails(_demos_argv(root, extra), capsys, *fragments)
    assert _snapshot(root) == before
    assert _leftovers(tmp_path, "ds") == ["ds"]


def test_demos_refuses_a_giraffe_dataset_left_by_an_older_version_without_touching_it(tmp_path, capsys):
    # Before the fix, the failed giraffe command left this: a dataset.json and no episodes.
    root = tmp_path / "ds"
    write_meta(root, {"backend": "tabletop", "env_config": {**json.loads(GIRAFFE), "family": "block2block"},
                      "seed0": 0, "created": "x"})
    before = _snapshot(root)
    _fails(_demos_argv(root, ["--env-config", GIRAFFE]), capsys, "'purple giraffe'", "nothing was written")
    assert _snapshot(root) == before and not (root / "episodes").exists()


def test_demos_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _fails(_demos_argv(out, []), capsys, "not a Dojo dataset", "choose a new folder")
    assert _snapshot(out) == {"notes.txt": ((out / "notes.txt").read_bytes(), (out / "notes.txt").stat().st_mtime_ns)}
    assert _leftovers(tmp_path, "mine") == ["mine"]
    (tmp_path / "afile").write_text("x")
    _fails(_demos_argv(tmp_path / "afile", []), capsys, "is a file")
    _fails(_demos_argv(tmp_path / "afile" / "ds", []), capsys, "cannot write")
    assert (tmp_path / "afile").read_text() == "x"


def test_an_empty_folder_stays_empty_after_a_failed_demos(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    _fails(_demos_argv(out, ["--env-config", GIRAFFE]), capsys, "'purple giraffe'")
    assert list(out.iterdir()) == [] and _leftovers(tmp_path, "empty") == ["empty"]


def test_an_expert_crash_before_any_episode_leaves_nothing(tmp_path, capsys, monkeypatch):
    def crash(args):
        raise RuntimeError("simulator crashed")

    monkeypatch.setattr(demos_mod, "_run_seed", crash)
    _fails(_demos_argv(tmp_path / "new" / "ds", []), capsys, "simulator crashed")
    assert not (tmp_path / "new").exists()


def test_a_crash_after_whole_episodes_keeps_them_as_a_resumable_dataset(tmp_path, capsys, monkeypatch):
    real, calls = demos_mod._run_seed, []

    def second_crashes(args):
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("simulator crashed")
        return real(args)

    out = tmp_path / "ds"
    monkeypatch.setattr(demos_mod, "_run_seed", second_crashes)
    _fails(_demos_argv(out, ["--n", "3"]), capsys, "simulator crashed")
    # The first seed's episode (or its rejection) was decided: kept only if it is an episode.
    kept = list_episode_files(out) if out.exists() else []
    assert _leftovers(tmp_path, "ds") == (["ds"] if kept else [])
    if kept:
        assert read_meta(out)["env_config"] == {**TINY_ENV, "family": "block2block"}
    monkeypatch.setattr(demos_mod, "_run_seed", real)
    assert main(_demos_argv(out, ["--n", "2"])) == 0  # the same command resumes (or starts) it
    assert len(list_episode_files(out)) == 2 and _leftovers(tmp_path, "ds") == ["ds"]


def test_a_new_dataset_is_renamed_into_place_when_done(tmp_path, capsys):
    out = tmp_path / "a" / "ds"
    assert main(_demos_argv(out, [])) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == str(out)
    assert len(list_episode_files(out)) == 1 and _leftovers(tmp_path / "a", "ds") == ["ds"]


# --- sft -----------------------------------------------------------------------------------

def _corrupt_episode(root):
    _dataset(root)
    list_episode_files(root)[0].write_bytes(b"not an npz")


BAD_DATA = {
    "missing folder": (lambda d: None, ["does not exist", "demos --out"]),
    "empty folder": (lambda d: d.mkdir(), ["dataset.json is missing", "demos --out"]),
    "dataset.json not JSON": (lambda d: (d.mkdir(), (d / "dataset.json").write_text("{not json")),
                              ["not valid JSON", "regenerate"]),
    "dataset.json not a dataset": (lambda d: (d.mkdir(), (d / "dataset.json").write_text('{"format": "x"}')),
                                   ["expected format 'dojo-demos'"]),
    "no episodes": (lambda d: write_meta(d, {"backend": "tabletop", "env_config": TINY_ENV}),
                    ["holds no episodes", "demos --out"]),
    "corrupt episode": (_corrupt_episode, ["ep_000000000.npz", "unreadable episode file"]),
    "one episode": (lambda d: _dataset(d, n=1), ["only 1 episode", "at least 2"]),
}
BAD_OPTIONS = {
    "max episodes 0": (["--max-episodes", "0"], ["--max-episodes", "at least 1"]),
    "lr 0": (["--lr", "0"], ["--lr", "> 0"]),
    "unknown device": (["--device", "tpu"], ["--device 'tpu'", "auto, cpu or cuda"]),
    "missing image encoder": (["--image-encoder", "hf:/no/such/model"], ["/no/such/model", "hf:<dir>"]),
}


def _sft_argv(data, out, extra: list[str] = ()) -> list[str]:
    return ["sft", "--data", str(data), "--out", str(out), *TINY_SFT, *extra]


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_sft_refuses_bad_data_and_creates_no_run_folder(case, tmp_path, capsys):
    make, fragments = BAD_DATA[case]
    data = tmp_path / "data"
    make(data)
    _fails(_sft_argv(data, tmp_path / "runs" / "r"), capsys, *fragments)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_sft_refuses_bad_options_and_creates_no_run_folder(case, tmp_path, capsys):
    extra, fragments = BAD_OPTIONS[case]
    _fails(_sft_argv(_dataset(tmp_path / "data"), tmp_path / "runs" / "r", extra), capsys, *fragments)
    assert not (tmp_path / "runs").exists()


def _old_run(out):
    """A run folder from an earlier start: must survive any failed sft on it byte for byte."""
    out.mkdir(parents=True)
    (out / "run.json").write_text('{"sft": {"note": "the old run"}}')
    (out / "last.pt").write_bytes(b"old weights")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    return out


@pytest.mark.parametrize("case", ["missing folder", "no episodes", "dataset.json not JSON",
                                  "missing image encoder"])
@pytest.mark.parametrize("fresh", [False, True])
def test_sft_leaves_an_existing_run_folder_untouched(case, fresh, tmp_path, capsys):
    out = _old_run(tmp_path / "run")
    before = _snapshot(out)
    if case in BAD_DATA:
        make, fragments = BAD_DATA[case]
        data = tmp_path / "data"
        make(data)
        extra = []
    else:
        data, (extra, fragments) = _dataset(tmp_path / "data"), BAD_OPTIONS[case]
        if not fresh:  # the data is fine, so resuming reads last.pt first: that refusal comes first
            fragments = ["last.pt", "corrupt"]
    _fails(_sft_argv(data, out, extra + (["--fresh"] if fresh else [])), capsys, *fragments)
    assert _snapshot(out) == before


def test_sft_refuses_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    data = _dataset(tmp_path / "data")
    _fails(_sft_argv(data, tmp_path / "afile"), capsys, "is a file", "another --out")
    _fails(_sft_argv(data, tmp_path / "afile" / "run"), capsys, "cannot write")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_crash_before_the_first_checkpoint_undoes_the_start(tmp_path, capsys, monkeypatch):
    def crash(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sft_mod, "_train_one_epoch", crash)
    data = _dataset(tmp_path / "data")
    _fails(_sft_argv(data, tmp_path / "runs" / "r"), capsys, "out of memory")
    assert not (tmp_path / "runs").exists()  # the folders it made are gone
    out = _old_run(tmp_path / "old")
    before = _snapshot(out)
    _fails(_sft_argv(data, out, ["--fresh"]), capsys, "out of memory")
    assert {k: v[0] for k, v in _snapshot(out).items()} == {k: v[0] for k, v in before.items()}  # run.json restored


def test_a_crash_after_a_checkpoint_keeps_it(tmp_path, capsys, monkeypatch):
    def crash(*a, **k):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(sft_mod, "evaluate_policy", crash)  # runs after best_stg.pt is saved
    out = tmp_path / "run"
    _fails(_sft_argv(_dataset(tmp_path / "data"), out, ["--eval-every", "1", "--eval-episodes", "1"]), capsys,
           "renderer crashed")
    assert (out / "best_stg.pt").exists() and (out / "run.json").exists()


# --- the worker's jobs call the same functions ------------------------------------------------

def test_failed_demos_and_sft_jobs_leave_no_folders_in_the_data_dir(tmp_path):
    from core.worker.runner import Worker
    from storage import init_db, repo

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        giraffe = repo.enqueue_job(s, "demos", {"n": 2, "workers": 1, "env_config": json.loads(GIRAFFE)}).id
        zero = repo.enqueue_job(s, "demos", {"n": 0, "workers": 1, "env_config": TINY_ENV}).id
        no_data = repo.enqueue_job(s, "sft", {"data": str(tmp_path / "nope"), "epochs": 1, "device": "cpu"}).id
    assert Worker(db, name="w", data_dir=tmp_path).run(exit_when_idle=True) == 3
    with db.read() as s:
        jobs = [repo.get_job(s, i) for i in (giraffe, zero, no_data)]
    assert [j.status for j in jobs] == ["failed"] * 3
    assert "purple giraffe" in jobs[0].error and "at least 1" in jobs[1].error and "does not exist" in jobs[2].error
    assert not (tmp_path / "demos").exists() and not (tmp_path / "runs").exists()
    db.dispose()
