"""The Keypoints page's parts: a click taken once, malformed events dropped, the next episode to
label, and the rings drawn where the clicks are."""
from __future__ import annotations

import numpy as np

from core.datasets.first_frame_labels import EpisodeLabels
from ui import keypoints as K


def test_a_click_is_taken_once_and_only_two_are_kept():
    click = {"x": 96, "y": 288, "width": 384, "height": 384, "unix_time": 1}
    pending, seen = K.take_click(click, [], None)
    assert pending == [(-0.5, 0.5)] and seen == 1
    assert K.take_click(click, pending, seen) == (pending, seen)  # the component repeats its last value each rerun
    pending, seen = K.take_click({**click, "x": 384, "unix_time": 2}, pending, seen)
    assert pending == [(-0.5, 0.5), (1.0, 0.5)]
    assert K.take_click({**click, "unix_time": 3}, pending, seen) == (pending, 3)  # a third waits for Undo
    assert K.take_click(None, [], None) == ([], None)
    for bad in ({"x": "a", "y": 1, "width": 9, "height": 9, "unix_time": 4}, {"y": 1, "unix_time": 5},
                {"x": 1, "y": 1, "width": 0, "height": 9, "unix_time": 6}):
        assert K.take_click(bad, [], None)[0] == []  # a malformed event from the browser is dropped


def test_next_to_label_skips_labelled_episodes_and_wraps():
    eps = [EpisodeLabels(f"episodes/ep_{i:09d}.npz", "x", 5, kind) for i, kind in
           enumerate(["all", "none", "first", "none"])]
    assert K.next_to_label(eps) == eps[1].file
    assert K.next_to_label(eps, after=eps[1].file) == eps[3].file
    assert K.next_to_label(eps, after=eps[3].file) == eps[1].file
    assert K.next_to_label(eps[:1] + eps[2:3]) is None


def test_rings_are_drawn_where_the_clicks_are_in_each_points_colour():
    frame = np.zeros((64, 64, 3), np.uint8)
    img = np.asarray(K.marked_frame(frame, [(-0.5, -0.5), (0.5, 0.5)], width=384))
    assert img.shape == (384, 384, 3)
    r = 384 // 28
    assert tuple(img[96, 96 - r]) == K.COLOURS["object"] and tuple(img[288, 288 - r]) == K.COLOURS["target"]
    assert not img[300:, :80].any()  # nothing drawn away from them
