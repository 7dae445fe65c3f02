"""Language goals for the tabletop: LanguageTable's Block2Block and Block2Location families.

Pure Python (no simulator import): goals, phrasings, sampling, parsing and the success
thresholds, so they can be tested and reused by a dataset writer without MuJoCo.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

BLOCK2BLOCK = "block2block"
BLOCK2LOCATION = "block2location"
FAMILIES = (BLOCK2BLOCK, BLOCK2LOCATION)

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("moon", "cube", "star", "pentagon")
# The 8 blocks of LanguageTable (not every colour/shape pair exists there).
CATALOG_BLOCKS = (
    "red moon", "red pentagon", "blue moon", "blue cube",
    "green cube", "green star", "yellow star", "yellow pentagon",
)
DEFAULT_BLOCKS = ("red moon", "blue cube", "green star", "yellow pentagon")
# Extra objects that are not colour+shape blocks (off by default; see TabletopConfig.objects).
EXTRA_OBJECTS = ("banana",)
# Words that name the object to push without saying what it is. Only unambiguous when the
# object is alone on the table, so only then does an instruction use (or parse) them; they
# teach a model that the words need not name a known block to find the thing to push
# (TabletopConfig.generic_name_prob).
GENERIC_NOUNS = ("object", "thing", "item", "block")
# A wider vocabulary for the same purpose: household object words used as stand-in names
# for a lone block (TabletopConfig.lone_nouns="household"). A model trained with them learns
# that, with one object on the table, the noun does not change where to push it. No food
# words: the new-object experiment's banana must stay a word no demonstration used.
HOUSEHOLD_NOUNS = GENERIC_NOUNS + (
    "piece", "shape", "toy", "cup", "ball", "box", "bottle", "can", "sponge", "marker", "spoon", "bowl",
    "plate", "brush", "tape", "eraser", "puck", "tile", "token", "mug", "lid", "clip", "stapler", "remote")
LONE_NOUNS = {"generic": GENERIC_NOUNS, "household": HOUSEHOLD_NOUNS}

# Region target points on a 3x3 grid, metres, +y = top of the table, +x = right.
REGION_OFFSET = 0.18
REGIONS: dict[str, tuple[float, float]] = {
    f"{row} {col}".replace("center center", "center"): (
        {"left": -REGION_OFFSET, "center": 0.0, "right": REGION_OFFSET}[col],
        {"top": REGION_OFFSET, "center": 0.0, "bottom": -REGION_OFFSET}[row],
    )
    for row in ("top", "center", "bottom")
    for col in ("left", "center", "right")
}

# Success: "next to" without needing to stack (block footprints are ~4.5 cm wide, so two
# touching blocks have centres ~4.5-6 cm apart).
BLOCK2BLOCK_SUCCESS_DISTANCE = 0.08
BLOCK2LOCATION_SUCCESS_DISTANCE = 0.07

BLOCK2BLOCK_TEMPLATES = (
    "push the {block} to the {target}",
    "move the {block} next to the {target}",
    "slide the {block} towards the {target}",
    "put the {block} by the {target}",
    "nudge the {block} close to the {target}",
)
BLOCK2LOCATION_TEMPLATES = (
    "push the {block} to the {region} of the table",
    "move the {block} to the {region}",
    "slide the {block} towards the {region} of the table",
    "put the {block} in the {region} of the board",
    "nudge the {block} into the {region} area",
)


class InstructionError(ValueError):
    """An instruction names something this scene does not have, or has no known phrasing."""


@dataclass(frozen=True)
class Goal:
    """What the episode asks for.

    family: ``"block2block"`` or ``"block2location"``.
    block: the object to push, e.g. ``"red moon"`` or ``"banana"``.
    target_block: the object to push it next to (Block2Block only, else None).
    region: one of ``REGIONS`` (Block2Location only, else None).
    """

    family: str
    block: str
    target_block: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InstructionError(f"Goal.family={self.family!r}; expected one of {FAMILIES}")
        if self.family == BLOCK2BLOCK and (self.target_block is None or self.region is not None):
            raise InstructionError(
                f"a block2block Goal needs target_block and no region; got "
                f"target_block={self.target_block!r}, region={self.region!r}")
        if self.family == BLOCK2LOCATION and (self.region is None or self.target_block is not None):
            raise InstructionError(
                f"a block2location Goal needs region and no target_block; got "
                f"target_block={self.target_block!r}, region={self.region!r}")
        if self.region is not None and self.region not in REGIONS:
            raise InstructionError(f"unknown region {self.region!r}; valid regions: {list(REGIONS)}")
        if self.target_block is not None and self.target_block == self.block:
            raise InstructionError(f"a block cannot be pushed to itself ({self.block!r})")


def success_distance(family: str) -> float:
    """The distance (metres) under which a goal of this family counts as reached."""
    return BLOCK2BLOCK_SUCCESS_DISTANCE if family == BLOCK2BLOCK else BLOCK2LOCATION_SUCCESS_DISTANCE


def sample_goal(rng: np.random.Generator, blocks: tuple[str, ...] | list[str], family: str) -> Goal:
    """A random goal over the objects in the scene (``blocks`` may include extra objects)."""
    blocks = tuple(blocks)
    if family == BLOCK2BLOCK:
        if len(blocks) < 2:
            raise InstructionError(f"block2block needs at least 2 objects in the scene; got {blocks}")
        i, j = rng.choice(len(blocks), size=2, replace=False)
        return Goal(BLOCK2BLOCK, blocks[int(i)], target_block=blocks[int(j)])
    if family == BLOCK2LOCATION:
        if not blocks:
            raise InstructionError("block2location needs at least 1 object in the scene")
        block = blocks[int(rng.integers(len(blocks)))]
        region = list(REGIONS)[int(rng.integers(len(REGIONS)))]
        return Goal(BLOCK2LOCATION, block, region=region)
    raise InstructionError(f"unknown family {family!r}; expected one of {FAMILIES}")


def render_instruction(goal: Goal, rng: np.random.Generator | None = None, phrasing: int | None = None,
                       name: str | None = None) -> str:
    """The goal in words, with a random phrasing from ``rng`` (or the given phrasing index).

    ``name``: the words for the object to push (default ``goal.block``), e.g. a generic noun."""
    templates = BLOCK2BLOCK_TEMPLATES if goal.family == BLOCK2BLOCK else BLOCK2LOCATION_TEMPLATES
    if phrasing is None:
        phrasing = int(rng.integers(len(templates))) if rng is not None else 0
    return templates[phrasing].format(block=name or goal.block, target=goal.target_block, region=goal.region)


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for field in ("block", "target", "region"):
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>[a-z][a-z ]*?)")
    return re.compile("^" + pattern + "$")


_B2B_REGEXES = [_template_regex(t) for t in BLOCK2BLOCK_TEMPLATES]
# Location phrasings match without their ending ("of the table", "area"): the ending is
# stripped from the region words instead, so "slide the X towards the center" also parses.
_B2L_REGEXES = [_template_regex(t.split("{region}")[0] + "{region}") for t in BLOCK2LOCATION_TEMPLATES]
_REGION_SUFFIX = re.compile(r" (of the (table|board)|area|region|corner|side|of the (table|board) area)$")
_REGION_WORDS = {"top", "bottom", "left", "right", "center", "centre", "middle", "corner", "side"}


def _valid_names(blocks: tuple[str, ...]) -> str:
    return (f"valid colours: {list(COLOURS)}; valid shapes: {list(SHAPES)}; "
            f"objects in this scene: {list(blocks)}; valid regions: {list(REGIONS)}")


def _normalise(text: str) -> str:
    text = text.lower().replace("centre", "center")
    text = re.sub(r"[^a-z ]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _check_object(name: str, blocks: tuple[str, ...], text: str) -> str | None:
    """None if ``name`` is an object in the scene, else the error message naming the bad word."""
    if name in blocks:
        return None
    if name in HOUSEHOLD_NOUNS:
        if len(blocks) == 1:
            return None
        return (f"{name!r} is ambiguous with {len(blocks)} objects on the table; name one of "
                f"{list(blocks)} (in {text!r})")
    words = name.split()
    if name in EXTRA_OBJECTS or name in CATALOG_BLOCKS:
        return f"{name!r} is not in this scene (in {text!r})"
    if len(words) >= 2 and words[0] not in COLOURS:
        return f"unknown colour {words[0]!r} (in {text!r})"
    if len(words) >= 2 and " ".join(words[1:]) not in SHAPES:
        return f"unknown shape {' '.join(words[1:])!r} (in {text!r})"
    if len(words) == 1 and words[0] in COLOURS:
        return f"{name!r} names a colour but no shape (in {text!r})"
    if len(words) == 1 and words[0] in SHAPES:
        return f"{name!r} names a shape but no colour (in {text!r})"
    if len(words) >= 2:
        return f"{name!r} is not in this scene (in {text!r})"
    return f"unknown object {name!r} (in {text!r})"


def parse_instruction(text: str, blocks: tuple[str, ...] | list[str]) -> Goal:
    """The Goal that ``text`` asks for, accepting every phrasing in the templates.

    ``blocks`` are the object names in the scene. Raises InstructionError naming the bad word
    and listing the valid colours, shapes, objects in the scene and regions.
    """
    blocks = tuple(blocks)
    norm = _normalise(text)
    errors: list[str] = []
    # Location phrasings first: "push the X to the top left of the table" also fits the
    # Block2Block template with target "top left of the table".
    for regex in _B2L_REGEXES:
        m = regex.match(norm)
        if not m:
            continue
        block, region = m.group("block"), _REGION_SUFFIX.sub("", m.group("region"))
        region = "center" if region == "center center" else region
        if region not in REGIONS:
            if set(region.split()) & _REGION_WORDS:
                errors.append(f"unknown region {region!r} (in {text!r})")
            continue
        bad = _check_object(block, blocks, text)
        if bad:
            errors.append(bad)
            continue
        return Goal(BLOCK2LOCATION, blocks[0] if block in HOUSEHOLD_NOUNS else block, region=region)
    for regex in _B2B_REGEXES:
        m = regex.match(norm)
        if not m:
            continue
        block, target = m.group("block"), m.group("target")
        if set(target.split()) & _REGION_WORDS:
            continue  # a region phrase: reported above
        bad = _check_object(block, blocks, text) or _check_object(target, blocks, text)
        if bad:
            errors.append(bad)
            continue
        if block == target:
            errors.append(f"the object to push and the target are both {block!r} (in {text!r})")
            continue
        return Goal(BLOCK2BLOCK, block, target_block=target)
    if errors:
        raise InstructionError(f"{errors[0]}; {_valid_names(blocks)}")
    phrasings = [t for t in BLOCK2BLOCK_TEMPLATES + BLOCK2LOCATION_TEMPLATES]
    raise InstructionError(
        f"cannot understand instruction {text!r}; use a phrasing like {phrasings}; "
        f"{_valid_names(blocks)}")
