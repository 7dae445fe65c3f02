"""Coarser visual meshes for small offscreen frames: the same picture at a fraction of the cost.

On a machine without a GPU, MuJoCo renders through Mesa's software rasterizer, and its cost
is the triangles it transforms, not the pixels it fills: Meta-World's Sawyer arm is ~68,000
triangles, and a 64x64 frame of it took 5.4 ms of the 6.2 ms a control step cost (physics
0.4 ms; hiding the meshes: 1.2 ms). At 64 px one pixel is ~1.5-2 cm of the scene, so detail
finer than that cannot show.

``simplify_visual_meshes(model, cell)`` merges each mesh's vertices that fall in the same
``cell``-sized grid cube (vertex clustering), drops the triangles that collapse, and shortens
the mesh's face list in place, before a renderer uploads the meshes. Vertices are not moved
or removed, so contacts (MuJoCo collides meshes through their vertices' convex hull) and
inertia (computed when the model was compiled) are unchanged; only ray queries
(rangefinders, mouse picking) see the coarser surface. Each kept triangle keeps its own
corner normals, so shading stays as it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def simplify_visual_meshes(model: Any, cell: float) -> dict[str, int]:
    """Vertex-cluster every mesh of ``model`` (an ``mujoco.MjModel``) to ``cell``
    metres, in place. Returns {"faces_before", "faces_after", "meshes"}. Call it before any
    ``mujoco.Renderer`` is made for the model (the renderer uploads the meshes once)."""
    import mujoco

    if not cell > 0:
        raise ValueError(f"simplify_visual_meshes: cell={cell!r}; expected a size in metres > 0")
    before = after = touched = 0
    for mid in range(model.nmesh):
        fa, fn = int(model.mesh_faceadr[mid]), int(model.mesh_facenum[mid])
        before += fn
        if fn == 0:
            continue
        va, vn = int(model.mesh_vertadr[mid]), int(model.mesh_vertnum[mid])
        keep = cluster_faces(model.mesh_vert[va:va + vn], model.mesh_face[fa:fa + fn], cell)
        faces = model.mesh_face[fa:fa + fn].copy()
        rep = _representatives(model.mesh_vert[va:va + vn], cell)
        k = len(keep)
        model.mesh_face[fa:fa + k] = rep[faces[keep]]
        # Each kept face keeps its own corner normals and texture coordinates.
        model.mesh_facenormal[fa:fa + k] = model.mesh_facenormal[fa:fa + fn][keep].copy()
        if int(model.mesh_texcoordnum[mid]) > 0:
            model.mesh_facetexcoord[fa:fa + k] = model.mesh_facetexcoord[fa:fa + fn][keep].copy()
        model.mesh_facenum[mid] = k
        after += k
        touched += 1
    return {"faces_before": before, "faces_after": after, "meshes": touched}


def _representatives(verts: np.ndarray, cell: float) -> np.ndarray:
    """For each vertex, the index of the first vertex in its grid cube."""
    keys = np.floor(np.asarray(verts, np.float64) / cell).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int32)


def cluster_faces(verts: np.ndarray, faces: np.ndarray, cell: float) -> np.ndarray:
    """Indices (ascending) of the faces that survive clustering ``verts`` to ``cell``: those
    whose three corners land in three different cubes, one face per set of three cubes."""
    rep = _representatives(verts, cell)
    f = rep[np.asarray(faces, np.int64)]
    distinct = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    idx = np.flatnonzero(distinct)
    if len(idx) == 0:
        return idx
    _, first = np.unique(np.sort(f[idx], axis=1), axis=0, return_index=True)
    return np.sort(idx[first])
