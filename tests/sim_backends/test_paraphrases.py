"""The held-out paraphrases: never the generator's words, the same episodes seed for seed."""
from __future__ import annotations

import numpy as np
import pytest

from sim_backends.tabletop import paraphrases as PP
from sim_backends.tabletop.instructions import (BLOCK2BLOCK_TEMPLATES, BLOCK2LOCATION_TEMPLATES, CATALOG_BLOCKS,
                                                InstructionError, parse_instruction, sample_goal)
from sim_backends.registry import make_env

TEMPLATE_WORDS = {w for t in BLOCK2BLOCK_TEMPLATES + BLOCK2LOCATION_TEMPLATES for w in t.split() if "{" not in w}


def _many(n: int = 400) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        goal = sample_goal(rng, CATALOG_BLOCKS[:4], ("block2block", "block2location")[i % 2])
        out.append(PP.render_paraphrase(goal, rng))
    return out


def test_no_paraphrase_uses_a_template_verb_colour_or_shape():
    verbs = {t.split()[0] for t in BLOCK2BLOCK_TEMPLATES + BLOCK2LOCATION_TEMPLATES}
    colours, shapes = {"red", "blue", "green", "yellow"}, {"moon", "cube", "star", "pentagon"}
    texts = _many()
    assert len(set(texts)) > 200  # varied, not a handful of sentences
    for text in texts:
        words = set(text.split())
        assert not words & (verbs | colours | shapes), text


def test_the_template_parser_understands_none_of_them():
    """They are outside the generator's language, not a rewording the parser would accept."""
    for text in _many(100):
        with pytest.raises(InstructionError):
            parse_instruction(text, CATALOG_BLOCKS[:4])


def test_the_paraphrase_set_is_fixed():
    """Held out before any training: its words must not drift. Changing them makes a new set,
    whose figures are not comparable with the old one's: update this digest and say so in
    docs/benchmarks.md."""
    import hashlib
    import json

    tables = [PP.COLOUR_WORDS, PP.SHAPE_WORDS, PP.REGION_WORDS, PP.BLOCK2BLOCK_FRAMES, PP.BLOCK2LOCATION_FRAMES]
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()[:16]
    assert digest == "005f8a90c55e1413"


def test_paraphrased_episodes_are_the_templates_episodes_in_other_words():
    cfg = {"family": "block2block", "image_size": 32, "max_steps": 5}
    plain, para = make_env("tabletop", cfg), make_env("tabletop", {**cfg, "phrasing": "paraphrases"})
    try:
        for seed in (3, 4, 5):
            (o1, _), (o2, _) = plain.reset(seed=seed), para.reset(seed=seed)
            np.testing.assert_array_equal(o1["image"], o2["image"])
            assert plain.goal == para.goal and o1["instruction"] != o2["instruction"]
            a = np.array([0.5, -0.3], np.float32)
            np.testing.assert_array_equal(plain.step(a)[0]["image"], para.step(a)[0]["image"])
    finally:
        plain.close()
        para.close()


def test_an_unknown_phrasing_is_refused():
    with pytest.raises(ValueError, match="phrasing"):
        make_env("tabletop", {"phrasing": "poetry"})
