"""Held-out paraphrases: how a person might type a tabletop goal, in words the instruction
generator (``instructions.py``'s templates) never produces.

Written once, on 2026-12-07, before any model was trained or evaluated on them, and never used
for training or to select anything: they only measure how a policy trained on the templates
copes with free-form language (``TabletopConfig.phrasing="paraphrases"``; ``bench.pretraining``
reports success on them beside the templates). Every verb, colour word, shape word, region
phrase and sentence frame below is absent from the templates; tests check that none of them
renders a template sentence and that the template parser rejects every one.
"""
from __future__ import annotations

import numpy as np

from sim_backends.tabletop.instructions import BLOCK2BLOCK, Goal

COLOUR_WORDS = {
    "red": ("crimson", "scarlet", "cherry"),
    "blue": ("navy", "azure", "cobalt"),
    "green": ("emerald", "lime", "grassy"),
    "yellow": ("golden", "lemon", "mustard"),
}
SHAPE_WORDS = {
    "moon": ("crescent", "sickle", "crescent shape"),
    "cube": ("square", "box", "square block"),
    "star": ("starry piece", "spiky piece", "asterisk shape"),
    "pentagon": ("five sided block", "pentagonal piece", "five cornered shape"),
}
REGION_WORDS = {
    "top left": ("upper left corner", "far left corner at the top", "top left corner"),
    "top center": ("top edge in the middle", "upper middle", "middle of the top edge"),
    "top right": ("upper right corner", "far right corner at the top", "top right corner"),
    "center left": ("middle of the left edge", "left side halfway up", "left edge"),
    "center": ("very middle", "middle of the table", "dead center"),
    "center right": ("middle of the right edge", "right side halfway up", "right edge"),
    "bottom left": ("lower left corner", "near left corner", "bottom left corner"),
    "bottom center": ("bottom edge in the middle", "lower middle", "middle of the bottom edge"),
    "bottom right": ("lower right corner", "near right corner", "bottom right corner"),
}
# Sentence frames: terse, plain, and long. {a} is the object to push, {b} its target.
BLOCK2BLOCK_FRAMES = (
    "{a} to {b}",
    "shove the {a} against the {b}",
    "drag the {a} over beside the {b}",
    "get the {a} right up against the {b}",
    "bring the {a} over so that it touches the {b}",
    "could you take the {a} and scoot it until it sits beside the {b}",
    "i want the {a} and the {b} touching, so shift the {a} over",
)
BLOCK2LOCATION_FRAMES = (
    "{a} to the {r}",
    "shove the {a} into the {r}",
    "drag the {a} over to the {r}",
    "get the {a} all the way to the {r}",
    "bring the {a} across to the {r}",
    "could you take the {a} and scoot it over to the {r}",
    "the {a} belongs in the {r}, shift it there",
)


def _object_words(name: str, rng: np.random.Generator) -> str:
    colour, _, shape = name.partition(" ")
    if colour not in COLOUR_WORDS or shape not in SHAPE_WORDS:
        return name  # not a colour-shape block (the banana): its own word
    c, s = COLOUR_WORDS[colour], SHAPE_WORDS[shape]
    return f"{c[int(rng.integers(len(c)))]} {s[int(rng.integers(len(s)))]}"


def render_paraphrase(goal: Goal, rng: np.random.Generator) -> str:
    """A held-out paraphrase of ``goal`` (which frame and which synonyms: drawn from ``rng``)."""
    a = _object_words(goal.block, rng)
    if goal.family == BLOCK2BLOCK:
        frame = BLOCK2BLOCK_FRAMES[int(rng.integers(len(BLOCK2BLOCK_FRAMES)))]
        return frame.format(a=a, b=_object_words(goal.target_block, rng))
    words = REGION_WORDS[goal.region]
    frame = BLOCK2LOCATION_FRAMES[int(rng.integers(len(BLOCK2LOCATION_FRAMES)))]
    return frame.format(a=a, r=words[int(rng.integers(len(words)))])
