"""MJCF for the tabletop: a bounded table over a floor, a mocap pusher and shaped blocks.

Geometry is generated as a string so the scene follows the config (which blocks, which
extra objects, image size). Every object is a free body whose frame origin is its
footprint centroid, so ``qpos[:2]`` is "the block centre" used for success.
"""
from __future__ import annotations

import math

from sim_backends.tabletop.instructions import CATALOG_BLOCKS, COLOURS, EXTRA_OBJECTS, SHAPES

TABLE_HALF_SIZE = 0.3  # metres: the table top is [-0.3, 0.3]^2, its surface at z = 0
TABLE_THICKNESS = 0.05
FLOOR_Z = -0.25  # where things land when they fall off
BLOCK_HALF_HEIGHT = 0.015
BLOCK_HALF_WIDTH = 0.0225  # ~4.5 cm blocks
PUSHER_RADIUS = 0.0125
PUSHER_Z = (0.004, 0.06)  # hovers above the table so it never rubs on it
CAMERA_Z = 1.0
CAMERA_EXTENT = 0.66  # orthographic view height in metres: the whole table plus a rim of floor

RGBA = {
    "red": "0.85 0.12 0.12 1",
    "blue": "0.12 0.30 0.92 1",
    "green": "0.10 0.68 0.20 1",
    "yellow": "0.95 0.82 0.08 1",
}
TABLE_RGBA = "0.72 0.72 0.70 1"
FLOOR_RGBA = "0.30 0.20 0.12 1"
PUSHER_RGBA = "0.08 0.08 0.08 1"

# Footprint radius per object kind, used for placement and by the scripted expert.
FOOTPRINT_RADIUS = {"cube": 0.032, "moon": 0.028, "star": 0.026, "pentagon": 0.026, "banana": 0.06}


def object_kind(name: str) -> str:
    """``"red moon"`` -> ``"moon"``; ``"banana"`` -> ``"banana"``."""
    return name if name in EXTRA_OBJECTS else name.split()[-1]


def body_name(name: str) -> str:
    return "obj_" + name.replace(" ", "_")


def _fmt(*values: float) -> str:
    return " ".join(f"{v:.5f}" for v in values)


def _pentagon_mesh() -> str:
    r, h = 0.025, BLOCK_HALF_HEIGHT
    verts = []
    for z in (-h, h):
        for k in range(5):
            a = math.pi / 2 + 2 * math.pi * k / 5
            verts += [r * math.cos(a), r * math.sin(a), z]
    return f'<mesh name="pentagon" vertex="{_fmt(*verts)}"/>'


def _block_geoms(kind: str, rgba: str) -> str:
    h = BLOCK_HALF_HEIGHT
    common = f'rgba="{rgba}" friction="0.5 0.005 0.0001" density="600"'
    if kind == "cube":
        w = BLOCK_HALF_WIDTH
        return f'<geom type="box" size="{_fmt(w, w, h)}" {common}/>'
    if kind == "star":
        # Two overlaid squares, one turned 45 degrees: an 8-pointed star ~4.8 cm across.
        w = 0.017
        return (f'<geom type="box" size="{_fmt(w, w, h)}" {common}/>'
                f'<geom type="box" size="{_fmt(w, w, h)}" euler="0 0 45" {common}/>')
    if kind == "pentagon":
        return f'<geom type="mesh" mesh="pentagon" {common}/>'
    if kind == "moon":
        # A crescent: small boxes along a 200-degree arc, opening towards -y, re-centred on
        # the centroid of the pieces so the body origin is the block centre.
        radius, n = 0.0165, 5
        angles = [math.radians(-10 + 200 * k / (n - 1)) for k in range(n)]
        cx = sum(radius * math.cos(a) for a in angles) / n
        cy = sum(radius * math.sin(a) for a in angles) / n
        geoms = []
        for a in angles:
            x, y = radius * math.cos(a) - cx, radius * math.sin(a) - cy
            geoms.append(f'<geom type="box" size="{_fmt(0.0075, 0.0085, h)}" pos="{_fmt(x, y, 0)}" '
                         f'euler="0 0 {math.degrees(a):.3f}" {common}/>')
        return "".join(geoms)
    if kind == "banana":
        # Three capsules on a shallow arc, ~12 cm long. The mass is spread along its length,
        # so an off-centre push spins it, as a real banana does.
        r, half_len, bend = 0.011, 0.02, math.radians(22)
        rgba = "0.95 0.85 0.15 1"
        common = f'rgba="{rgba}" friction="0.5 0.005 0.0001" density="600"'
        dx, dy = half_len * math.cos(bend), half_len * math.sin(bend)
        segs = [(-half_len, 0.0, half_len, 0.0)]
        segs.append((half_len, 0.0, half_len + 2 * dx, 2 * dy))
        segs.append((-half_len, 0.0, -half_len - 2 * dx, 2 * dy))
        cy = (2 * dy) / 3  # centroid of the three equal segments' midpoints
        out = []
        for x0, y0, x1, y1 in segs:
            out.append(f'<geom type="capsule" size="{r:.5f}" '
                       f'fromto="{_fmt(x0, y0 - cy, 0, x1, y1 - cy, 0)}" {common}/>')
        return "".join(out)
    raise ValueError(f"unknown object kind {kind!r}; expected one of {SHAPES + EXTRA_OBJECTS}")


def object_half_height(name: str) -> float:
    return 0.011 if object_kind(name) == "banana" else BLOCK_HALF_HEIGHT


def build_mjcf(objects: tuple[str, ...], image_size: int = 64, timestep: float = 0.005) -> str:
    """The whole scene as an MJCF string; ``objects`` are block names and extra objects."""
    for name in objects:
        if name not in CATALOG_BLOCKS and name not in EXTRA_OBJECTS:
            raise ValueError(f"unknown object {name!r}; expected one of {CATALOG_BLOCKS + EXTRA_OBJECTS}")
    bodies = []
    for i, name in enumerate(objects):
        kind = object_kind(name)
        colour = name.split()[0] if kind != "banana" else "yellow"
        assert colour in COLOURS
        # Parked out of the way; reset() places every object.
        z = object_half_height(name) + 0.001
        bodies.append(
            f'<body name="{body_name(name)}" pos="{_fmt(-0.25 + 0.1 * i, -0.25, z)}">'
            f'<freejoint name="{body_name(name)}_joint"/>{_block_geoms(kind, RGBA[colour])}</body>')
    off = max(image_size, 64)
    t = TABLE_HALF_SIZE
    return f"""
<mujoco model="dojo_tabletop">
  <compiler angle="degree"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="pyramidal"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{off}" offheight="{off}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>{_pentagon_mesh()}</asset>
  <worldbody>
    <light name="top" pos="0 0 1.5" dir="0 0 -1" directional="true" castshadow="false"
           diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 {FLOOR_Z}" rgba="{FLOOR_RGBA}"/>
    <geom name="table" type="box" size="{_fmt(t, t, TABLE_THICKNESS / 2)}"
          pos="0 0 {-TABLE_THICKNESS / 2:.5f}" rgba="{TABLE_RGBA}" friction="0.5 0.005 0.0001"/>
    <camera name="top" pos="0 0 {CAMERA_Z}" orthographic="true" fovy="{CAMERA_EXTENT}"/>
    <body name="pusher" mocap="true" pos="0 0 0">
      <geom name="pusher" type="cylinder" size="{PUSHER_RADIUS}"
            fromto="0 0 {PUSHER_Z[0]} 0 0 {PUSHER_Z[1]}" rgba="{PUSHER_RGBA}" friction="0.3 0.005 0.0001"/>
    </body>
    {''.join(bodies)}
  </worldbody>
</mujoco>
"""
