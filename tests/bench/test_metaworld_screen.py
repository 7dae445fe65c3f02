"""The task screen: real demos, a real (tiny) Stage 1, real rollouts on seeds apart from the test set."""
import pytest

from bench import metaworld_screen as screen
from core.method.seeds import EVAL_SEED0, SELECT_SEED0


def test_screen_reports_every_task_and_the_band_filter(tmp_path, capsys):
    res = screen.main(["--tasks", "button-press-topdown-v3,drawer-close-v3", "--demos-per-task", "3",
                       "--epochs", "1", "--seeds-per-task", "2", "--band", "0,1", "--workers", "1",
                       "--root", str(tmp_path)])
    assert set(res["per_task"]) == {"button-press-topdown-v3", "drawer-close-v3"}
    assert all(0.0 <= v <= 1.0 for v in res["per_task"].values())
    assert res["in_band"] == ["button-press-topdown-v3", "drawer-close-v3"]  # band 0..1 keeps all
    assert res["tasks"] == "button-press-topdown-v3,drawer-close-v3"
    assert (tmp_path / "demos-drawer-close-v3-64px" / "dataset.json").exists()  # bench.metaworld's names
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("RESULT {")
    # never the test seeds, never practice's selection seeds (2 tasks x 2 seeds from SCREEN_SEED0)
    assert screen.SCREEN_SEED0 >= SELECT_SEED0 + 100_000 and screen.SCREEN_SEED0 > EVAL_SEED0 + 100_000


def test_screen_refuses_a_bad_band():
    with pytest.raises(SystemExit, match="LOW < HIGH"):
        screen.parse_band("0.7,0.2")
    with pytest.raises(SystemExit, match="LOW,HIGH"):
        screen.parse_band("half")
