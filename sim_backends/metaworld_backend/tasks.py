"""Meta-World's 50 v3 tasks: instructions, benchmark subsets and step limits (data only).

This module imports neither MuJoCo nor Meta-World, so UIs and CLIs can list tasks cheaply.
A test checks that ``TASK_NAMES`` equals ``metaworld.env_dict.ALL_V3_ENVIRONMENTS``.

Each task has one instruction (the canonical phrasing, first) and a few alternatives; the
texts are distinct across tasks, since the instruction is what tells a multi-task policy
which task it is doing. They follow the task descriptions of the Meta-World paper.
"""
from __future__ import annotations

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("put the nut onto the peg", "pick up the ring and slide it over the peg",
                    "assemble the nut on the peg"),
    "basketball-v3": ("dunk the ball into the basket", "put the basketball in the hoop",
                      "score a basket with the ball"),
    "bin-picking-v3": ("move the puck from one bin to the other", "pick the puck out of the bin and drop it in the other bin",
                       "transfer the puck between the bins"),
    "box-close-v3": ("close the box with its lid", "put the lid on the box",
                     "grab the cover and close the box"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down from above",
                                "press down on the button"),
    "button-press-topdown-wall-v3": ("press the button from the top behind the wall",
                                     "reach over the wall and press the button down",
                                     "push the button down past the wall"),
    "button-press-v3": ("press the button", "push the button in", "press the button on the box"),
    "button-press-wall-v3": ("press the button behind the wall", "go around the wall and press the button",
                             "push the button past the wall"),
    "coffee-button-v3": ("press the coffee machine button", "push the button on the coffee machine",
                         "start the coffee machine"),
    "coffee-pull-v3": ("pull the mug out of the coffee machine", "take the mug away from the coffee machine",
                       "slide the cup out from under the coffee machine"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the cup under the coffee spout",
                       "put the mug beneath the coffee machine"),
    "dial-turn-v3": ("turn the dial", "rotate the dial half a turn", "spin the knob around"),
    "disassemble-v3": ("take the nut off the peg", "lift the ring off the peg", "disassemble the nut from the peg"),
    "door-close-v3": ("close the door", "swing the door shut", "push the door closed"),
    "door-lock-v3": ("lock the door", "turn the door lock to locked", "rotate the lock down to lock the door"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open by its handle"),
    "door-unlock-v3": ("unlock the door", "turn the door lock to unlocked", "rotate the lock to unlock the door"),
    "hand-insert-v3": ("put the gripper into the hole", "insert the hand into the hole",
                       "reach down into the hole"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut", "slide the drawer closed"),
    "drawer-open-v3": ("open the drawer", "pull the drawer open", "slide the drawer out"),
    "faucet-open-v3": ("turn the faucet on", "open the faucet", "rotate the tap handle to open it"),
    "faucet-close-v3": ("turn the faucet off", "close the faucet", "rotate the tap handle to close it"),
    "hammer-v3": ("hammer the nail into the wall", "use the hammer to drive the nail in",
                  "pick up the hammer and hit the nail"),
    "handle-press-side-v3": ("press the handle down from the side", "push the side handle down",
                             "press down on the handle sideways"),
    "handle-press-v3": ("press the handle down", "push the handle down", "press down on the handle"),
    "handle-pull-side-v3": ("pull the handle up from the side", "lift the side handle up",
                            "pull up on the handle sideways"),
    "handle-pull-v3": ("pull the handle up", "lift the handle", "pull up on the handle"),
    "lever-pull-v3": ("pull the lever up", "raise the lever", "lift the lever up"),
    "pick-place-wall-v3": ("pick up the puck and place it behind the wall", "lift the puck over the wall to the goal",
                           "carry the puck past the wall to the target"),
    "pick-out-of-hole-v3": ("pick the puck out of the hole", "lift the puck up out of the hole",
                            "take the puck out of the hole"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "move the puck through the air to the target",
                      "lift the puck and put it on the goal"),
    "plate-slide-v3": ("slide the plate into the cabinet", "push the plate into the goal",
                       "slide the plate forward into the net"),
    "plate-slide-side-v3": ("slide the plate sideways into the cabinet", "push the plate into the goal from the side",
                            "slide the plate sideways into the net"),
    "plate-slide-back-v3": ("slide the plate out of the cabinet", "pull the plate back out of the goal",
                            "get the plate back out of the net"),
    "plate-slide-back-side-v3": ("slide the plate sideways out of the cabinet",
                                 "pull the plate out of the goal to the side",
                                 "get the plate out of the net sideways"),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", "push the peg sideways into the hole",
                           "pick up the peg and put it in the hole"),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg out of the hole sideways",
                           "remove the peg from the hole"),
    "soccer-v3": ("kick the ball into the goal", "push the soccer ball into the net", "score a goal with the ball"),
    "stick-push-v3": ("push the bottle with the stick", "use the stick to push the bottle to the goal",
                      "grab the stick and push the bottle"),
    "stick-pull-v3": ("pull the bottle with the stick", "use the stick to pull the bottle to the goal",
                      "grab the stick and pull the bottle"),
    "push-v3": ("push the puck to the goal", "slide the puck to the target", "push the puck onto the goal"),
    "push-wall-v3": ("push the puck around the wall to the goal", "slide the puck past the wall to the target",
                     "push the puck to the goal behind the wall"),
    "push-back-v3": ("pull the puck back to the goal", "slide the puck back towards you to the target",
                     "push the puck back to the goal"),
    "reach-v3": ("reach the goal", "move the gripper to the target", "touch the goal position"),
    "reach-wall-v3": ("reach the goal behind the wall", "move the gripper over the wall to the target",
                      "reach past the wall to the goal"),
    "shelf-place-v3": ("put the puck on the shelf", "pick up the puck and place it on the shelf",
                       "move the puck onto the shelf"),
    "sweep-into-v3": ("sweep the puck into the hole", "push the puck into the hole",
                      "slide the puck into the hole"),
    "sweep-v3": ("sweep the puck off the table", "push the puck off the edge of the table",
                 "slide the puck off the table"),
    "window-open-v3": ("open the window", "slide the window open", "push the window open"),
    "window-close-v3": ("close the window", "slide the window shut", "push the window closed"),
}

TASK_NAMES: tuple[str, ...] = tuple(INSTRUCTIONS)

# Meta-World's multi-task benchmark subsets (metaworld.env_dict.MT10_V3).
MT10: tuple[str, ...] = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)
MT50: tuple[str, ...] = TASK_NAMES

# Default step limit per task: 1.25x the longest successful scripted-expert episode
# (Gaussian noise 0.1, 10 seeds) rounded up to 10, at least 100 (Meta-World's own is 500).
# Long limits cost rendering time only for episodes that fail.
MAX_STEPS: dict[str, int] = {
    "assembly-v3": 130, "basketball-v3": 140, "bin-picking-v3": 200, "box-close-v3": 180,
    "button-press-topdown-v3": 100, "button-press-topdown-wall-v3": 100, "button-press-v3": 100,
    "button-press-wall-v3": 100, "coffee-button-v3": 100, "coffee-pull-v3": 120, "coffee-push-v3": 100,
    "dial-turn-v3": 140, "disassemble-v3": 250, "door-close-v3": 100, "door-lock-v3": 160,
    "door-open-v3": 150, "door-unlock-v3": 100, "hand-insert-v3": 110, "drawer-close-v3": 110,
    "drawer-open-v3": 120, "faucet-open-v3": 100, "faucet-close-v3": 100, "hammer-v3": 100,
    "handle-press-side-v3": 100, "handle-press-v3": 100, "handle-pull-side-v3": 160, "handle-pull-v3": 160,
    "lever-pull-v3": 120, "pick-place-wall-v3": 170, "pick-out-of-hole-v3": 250, "pick-place-v3": 100,
    "plate-slide-v3": 100, "plate-slide-side-v3": 100, "plate-slide-back-v3": 110,
    "plate-slide-back-side-v3": 100, "peg-insert-side-v3": 330, "peg-unplug-side-v3": 230,
    "soccer-v3": 150, "stick-push-v3": 110, "stick-pull-v3": 400, "push-v3": 100, "push-wall-v3": 120,
    "push-back-v3": 460, "reach-v3": 120, "reach-wall-v3": 100, "shelf-place-v3": 140,
    "sweep-into-v3": 100, "sweep-v3": 140, "window-open-v3": 130, "window-close-v3": 120,
}


def check_task(name: str) -> str:
    """``name`` if it is a Meta-World v3 task; otherwise a ValueError listing the valid names."""
    if name not in INSTRUCTIONS:
        hint = ""
        if isinstance(name, str) and name.endswith("-v2") and name[:-3] + "-v3" in INSTRUCTIONS:
            hint = f" (Meta-World 3 renamed it {name[:-3] + '-v3'!r})"
        elif isinstance(name, str) and name + "-v3" in INSTRUCTIONS:
            hint = f" (did you mean {name + '-v3'!r}?)"
        raise ValueError(f"unknown Meta-World task {name!r}{hint}; valid names: {', '.join(sorted(TASK_NAMES))}")
    return name


def resolve_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """"MT10" / "MT50" / "push-v3,reach-v3" / a list -> validated task names."""
    if isinstance(spec, str):
        if spec.upper() in ("MT10", "MT50"):
            return MT10 if spec.upper() == "MT10" else MT50
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    return tuple(check_task(s) for s in spec)
