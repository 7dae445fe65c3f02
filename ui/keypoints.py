"""The Keypoints page's parts: the first frame drawn large with the clicks on it, a click taken once,
and saving the clicks with an audit entry (core/datasets/first_frame_labels.py writes the file)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from core.datasets import first_frame_labels as L
from storage import repo

SHOWN_PX = 384  # the frame's width on the page: 64-px frames are clicked at 6x
COLOURS = {"object": (255, 140, 0), "target": (0, 200, 255)}  # one colour per entry of L.POINTS
COLOUR_WORDS = {"object": "orange", "target": "blue"}  # the same, as Streamlit's markdown colours
KIND_WORDS = {"none": "no labels", "first": "clicked", "all": "simulator's labels on every frame"}


def episodes(root: Path) -> list[L.EpisodeLabels]:
    """``L.list_episodes(root)``, read again only when a file in ``episodes/`` was replaced or added
    (each save renames a file into it, which moves the folder's mtime): a rerun of the page on a
    3,000-episode dataset would otherwise open every file (~0.8 ms each)."""
    folder = Path(root) / "episodes"
    return _episodes(str(root), folder.stat().st_mtime_ns) if folder.is_dir() else []


@st.cache_data(max_entries=8, show_spinner=False)
def _episodes(root: str, stamp: int) -> list[L.EpisodeLabels]:
    return L.list_episodes(Path(root))


def marked_frame(frame: np.ndarray, points: Sequence[Sequence[float]], width: int = SHOWN_PX) -> Image.Image:
    """``frame`` scaled to ``width`` (nearest: the pixels a model sees), each (u, v) point drawn as a
    ring with its number, in the colour of the point it is (object, then target)."""
    h, w = frame.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(frame)).resize((width, round(width * h / w)), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    r = max(8, width // 28)
    font = ImageFont.load_default(size=max(12, width // 20))
    for i, (u, v) in enumerate(points[:len(L.POINTS)]):
        x, y = L.uv_to_pixel(u, v, img.width, img.height)
        colour = COLOURS[L.POINTS[i]]
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=3)
        draw.line((x - r // 2, y, x + r // 2, y), fill=colour, width=2)
        draw.line((x, y - r // 2, x, y + r // 2), fill=colour, width=2)
        draw.text((x + r + 2, y - 2 * r), str(i + 1), fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return img


def take_click(value: Optional[dict[str, Any]], pending: list[tuple[float, float]], seen: Optional[float]
               ) -> tuple[list[tuple[float, float]], Optional[float]]:
    """The clicks after the component's ``value`` ({x, y, width, height, unix_time}): a new click (a
    time not ``seen``) is appended while fewer than len(L.POINTS) are pending; a repeat of the last
    value (the component returns it on every rerun) changes nothing. Returns (pending, seen)."""
    if not value or value.get("unix_time") == seen:
        return pending, seen
    stamp = value.get("unix_time")
    if len(pending) >= len(L.POINTS):
        return pending, stamp
    try:
        uv = L.pixel_to_uv(float(value["x"]), float(value["y"]), float(value["width"]), float(value["height"]))
    except (KeyError, TypeError, ValueError):
        return pending, stamp  # a malformed event from the browser is dropped, never stored
    return pending + [uv], stamp


def save_clicks(s, root: Path, file: str, points: Sequence[Sequence[float]], *, actor) -> L.EpisodeLabels:
    """Write the clicks into the episode file and audit who clicked what (``act`` runs this in one
    write transaction; a LabelError is a ValueError, shown by ``act``)."""
    repo.require_role(actor, "label")
    saved = L.save_clicks(root, file, points)
    repo.audit(s, actor, "label_keypoints", ("dataset", Path(root).name),
               {"file": file, "points": {name: list(p) for name, p in zip(L.POINTS, saved.first or ())}})
    return saved


def next_to_label(episodes: Sequence[L.EpisodeLabels], after: Optional[str] = None) -> Optional[str]:
    """The first episode without labels after ``after`` (wrapping round), or None when all have some."""
    files = [e.file for e in episodes]
    start = files.index(after) + 1 if after in files else 0
    order = list(episodes[start:]) + list(episodes[:start])
    return next((e.file for e in order if e.kind == "none"), None)
