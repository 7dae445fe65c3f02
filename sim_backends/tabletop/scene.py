"""MJCF for the tabletop: a bounded table over a floor, a mocap pusher and shaped blocks.

Geometry is generated as a string so the scene follows the config (which blocks, which
extra objects, image size). Every object is a free body whose frame origin is its
footprint centroid, so ``qpos[:2]`` is "the block centre" used for success.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
PUSHER_RGBA = "0.08 0.08 0.08 1"



@dataclass(frozen=True)
class Domain:
    """How the table looks and behaves (``TabletopConfig.domain``). "sim" is Dojo's tabletop;
    "lab" differs from it the way a real table differs from a simulator, for the paper's
    Real2Sim experiment (demonstrations collected in one domain, practice in the other).
    Colours are MuJoCo rgb(a) strings; light values are intensities in [0, 1]."""

    table_rgba: str = "0.72 0.72 0.70 1"
    table_checker: tuple[str, str] | None = None
    """Two rgb colours of a checker texture on the table top (wood grain, a mat), or None."""
    floor_rgba: str = "0.30 0.20 0.12 1"
    ambient: float = 0.35
    headlight: float = 0.3
    light_rgb: str = "0.5 0.5 0.5"
    light_dir: tuple[float, float, float] = (0.0, 0.0, -1.0)
    camera_pos: tuple[float, float, float] = (0.0, 0.0, CAMERA_Z)
    """Where the camera sits (metres); it looks at the table's centre."""
    camera_roll_deg: float = 0.0
    orthographic: bool = True
    fovy: float = CAMERA_EXTENT
    """Orthographic: the view's height in metres. Perspective: the vertical field of view, degrees."""
    block_scale: float = 1.0
    """Block footprints times this (the height stays)."""
    friction: float = 0.5
    """Sliding friction of blocks (and the table top under them)."""


DOMAINS = {
    "sim": Domain(),
    # A wooden table under a warm lamp to one side, seen by a camera tilted ~20 degrees from
    # above its near edge and turned 4 degrees, blocks 12 % larger and grippier than in "sim".
    "lab": Domain(table_rgba="0.55 0.42 0.30 1", table_checker=("0.58 0.45 0.31", "0.49 0.37 0.25"),
                  floor_rgba="0.14 0.14 0.17 1", ambient=0.25, headlight=0.2, light_rgb="0.75 0.65 0.5",
                  light_dir=(0.45, 0.3, -1.0), camera_pos=(0.02, -0.34, 0.9), camera_roll_deg=4.0,
                  orthographic=False, fovy=44.0, block_scale=1.12, friction=0.8),
}


def camera_axes(domain: Domain) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The camera's x (image right), y (image up) and z (backwards: it looks along -z) axes in
    the world: it looks from ``camera_pos`` at the table's centre, rolled by ``camera_roll_deg``."""
    px, py, pz = domain.camera_pos
    n = math.sqrt(px * px + py * py + pz * pz)
    z = (px / n, py / n, pz / n)  # the camera looks along -z
    roll = math.radians(domain.camera_roll_deg)
    x = (math.cos(roll), math.sin(roll), 0.0)
    dot = sum(a * b for a, b in zip(x, z))
    x = tuple(a - dot * b for a, b in zip(x, z))
    nx = math.sqrt(sum(a * a for a in x))
    x = tuple(a / nx for a in x)
    y = (z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0])
    return x, y, z


# Footprint radius per object kind, used for placement and by the scripted expert.
FOOTPRINT_RADIUS = {"cube": 0.032, "moon": 0.028, "star": 0.026, "pentagon": 0.026, "banana": 0.06}


def object_kind(name: str) -> str:
    """``"red moon"`` -> ``"moon"``; ``"banana"`` -> ``"banana"``."""
    return name if name in EXTRA_OBJECTS else name.split()[-1]


def body_name(name: str) -> str:
    return "obj_" + name.replace(" ", "_")


def _fmt(*values: float) -> str:
    return " ".join(f"{v:.5f}" for v in values)


def _pentagon_mesh(scale: float = 1.0) -> str:
    r, h = 0.025 * scale, BLOCK_HALF_HEIGHT
    verts = []
    for z in (-h, h):
        for k in range(5):
            a = math.pi / 2 + 2 * math.pi * k / 5
            verts += [r * math.cos(a), r * math.sin(a), z]
    return f'<mesh name="pentagon" vertex="{_fmt(*verts)}"/>'


def _block_geoms(kind: str, rgba: str, scale: float = 1.0, friction: float = 0.5) -> str:
    h = BLOCK_HALF_HEIGHT
    common = f'rgba="{rgba}" friction="{friction:g} 0.005 0.0001" density="600"'
    if kind == "cube":
        w = BLOCK_HALF_WIDTH * scale
        return f'<geom type="box" size="{_fmt(w, w, h)}" {common}/>'
    if kind == "star":
        # Two overlaid squares, one turned 45 degrees: an 8-pointed star ~4.8 cm across.
        w = 0.017 * scale
        return (f'<geom type="box" size="{_fmt(w, w, h)}" {common}/>'
                f'<geom type="box" size="{_fmt(w, w, h)}" euler="0 0 45" {common}/>')
    if kind == "pentagon":
        return f'<geom type="mesh" mesh="pentagon" {common}/>'
    if kind == "moon":
        # A crescent: small boxes along a 200-degree arc, opening towards -y, re-centred on
        # the centroid of the pieces so the body origin is the block centre.
        radius, n = 0.0165 * scale, 5
        angles = [math.radians(-10 + 200 * k / (n - 1)) for k in range(n)]
        cx = sum(radius * math.cos(a) for a in angles) / n
        cy = sum(radius * math.sin(a) for a in angles) / n
        geoms = []
        for a in angles:
            x, y = radius * math.cos(a) - cx, radius * math.sin(a) - cy
            geoms.append(f'<geom type="box" size="{_fmt(0.0075 * scale, 0.0085 * scale, h)}" pos="{_fmt(x, y, 0)}" '
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


def build_mjcf(objects: tuple[str, ...], image_size: int = 64, timestep: float = 0.005,
               domain: Domain | str = "sim") -> str:
    """The whole scene as an MJCF string; ``objects`` are block names and extra objects,
    ``domain`` one of ``DOMAINS`` (or a Domain)."""
    if isinstance(domain, str):
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {list(DOMAINS)}")
        domain = DOMAINS[domain]
    for name in objects:
        if name not in CATALOG_BLOCKS and name not in EXTRA_OBJECTS:
            raise ValueError(f"unknown object {name!r}; expected one of {CATALOG_BLOCKS + EXTRA_OBJECTS}")
    d = domain
    bodies = []
    for i, name in enumerate(objects):
        kind = object_kind(name)
        colour = name.split()[0] if kind != "banana" else "yellow"
        assert colour in COLOURS
        # Parked out of the way; reset() places every object.
        z = object_half_height(name) + 0.001
        geoms = _block_geoms(kind, RGBA[colour], d.block_scale, d.friction)
        bodies.append(
            f'<body name="{body_name(name)}" pos="{_fmt(-0.25 + 0.1 * i, -0.25, z)}">'
            f'<freejoint name="{body_name(name)}_joint"/>{geoms}</body>')
    off = max(image_size, 64)
    t = TABLE_HALF_SIZE
    x_axis, y_axis, _ = camera_axes(d)
    texture, table_look = "", f'rgba="{d.table_rgba}"'
    if d.table_checker:
        texture = (f'<texture name="table" type="2d" builtin="checker" rgb1="{d.table_checker[0]}" '
                   f'rgb2="{d.table_checker[1]}" width="64" height="64"/>'
                   '<material name="table" texture="table" texrepeat="6 6" specular="0"/>')
        table_look = 'material="table"'
    a, h = d.ambient, d.headlight
    return f"""
<mujoco model="dojo_tabletop">
  <compiler angle="degree"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="pyramidal"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{off}" offheight="{off}"/>
    <headlight ambient="{a:g} {a:g} {a:g}" diffuse="{h:g} {h:g} {h:g}" specular="0 0 0"/>
  </visual>
  <asset>{_pentagon_mesh(d.block_scale)}{texture}</asset>
  <worldbody>
    <light name="top" pos="0 0 1.5" dir="{_fmt(*d.light_dir)}" directional="true" castshadow="false"
           diffuse="{d.light_rgb}" specular="0 0 0"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 {FLOOR_Z}" rgba="{d.floor_rgba}"/>
    <geom name="table" type="box" size="{_fmt(t, t, TABLE_THICKNESS / 2)}"
          pos="0 0 {-TABLE_THICKNESS / 2:.5f}" {table_look} friction="{d.friction:g} 0.005 0.0001"/>
    <camera name="top" pos="{_fmt(*d.camera_pos)}" xyaxes="{_fmt(*x_axis, *y_axis)}"
            orthographic="{'true' if d.orthographic else 'false'}" fovy="{d.fovy:g}"/>
    <body name="pusher" mocap="true" pos="0 0 0">
      <geom name="pusher" type="cylinder" size="{PUSHER_RADIUS}"
            fromto="0 0 {PUSHER_Z[0]} 0 0 {PUSHER_Z[1]}" rgba="{PUSHER_RGBA}" friction="0.3 0.005 0.0001"/>
    </body>
    {''.join(bodies)}
  </worldbody>
</mujoco>
"""


def project(domain: Domain, points) -> list[tuple[float, float]]:
    """World points (x, y, z) -> camera image coordinates (u, v) in [-1, 1] at the image's
    edges (u left to right, v top to bottom), for the domain's camera."""
    x_axis, y_axis, z_axis = camera_axes(domain)
    px, py, pz = domain.camera_pos
    out = []
    for p in points:
        rel = (p[0] - px, p[1] - py, p[2] - pz)
        cx, cy, cz = (sum(a * b for a, b in zip(rel, ax)) for ax in (x_axis, y_axis, z_axis))
        if domain.orthographic:
            half = domain.fovy / 2.0
            out.append((cx / half, -cy / half))
        else:  # depth along the viewing direction is -cz; square images: same focal length both ways
            f = 1.0 / math.tan(math.radians(domain.fovy) / 2.0)
            out.append((f * cx / -cz, -f * cy / -cz))
    return out
