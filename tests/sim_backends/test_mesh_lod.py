"""Coarser visual meshes: the same frames within a grey level, the same physics, fewer triangles."""
from __future__ import annotations

import numpy as np
import pytest

from sim_backends.mesh_lod import cluster_faces
from sim_backends.metaworld_backend import MetaWorldConfig, MetaWorldRaw


def test_cluster_faces_drops_collapsed_and_duplicate_triangles():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.01, 0.01, 0], [1.01, 0, 0]], float)
    faces = np.array([[0, 1, 2],    # kept
                      [0, 3, 1],    # 0 and 3 share a cube at cell 0.5: collapses
                      [4, 2, 0],    # the same three cubes as face 0 once 4 -> 1: a duplicate
                      [1, 2, 3]])   # 3 -> 0: the same cubes again
    assert list(cluster_faces(verts, faces, 0.5)) == [0]
    assert list(cluster_faces(verts, faces, 0.001)) == [0, 1, 2, 3]  # finer than any gap: all kept
    assert len(cluster_faces(verts, faces[:0], 0.5)) == 0


def _pair(task: str, cell: float):
    full, lod = MetaWorldRaw(task, 64, mesh_cell=None), MetaWorldRaw(task, 64, mesh_cell=cell)
    return full, lod


@pytest.mark.parametrize("task", ["drawer-close-v3", "pick-place-v3"])
def test_coarse_meshes_keep_frames_and_physics(task):
    full, lod = _pair(task, 0.01)
    try:
        st = lod.mesh_stats
        assert st["faces_after"] < 0.3 * st["faces_before"] and st["meshes"] >= 10
        full.reset(seed=3)
        lod.reset(seed=3)
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(25):
            a = rng.uniform(-1, 1, 4)
            full.step(a)
            lod.step(a)
            diffs.append(np.abs(full.render().astype(float) - lod.render().astype(float)).mean())
        np.testing.assert_array_equal(full.env.unwrapped.data.qpos, lod.env.unwrapped.data.qpos)
        assert max(diffs) < 2.0, diffs  # mean |difference| per channel, out of 255
        assert max(diffs) > 0.0  # the meshes did change
    finally:
        full.close()
        lod.close()


def test_mesh_cell_setting_is_checked():
    with pytest.raises(ValueError, match="mesh_cell"):
        MetaWorldConfig(task="reach-v3", mesh_cell=0.5)
    assert MetaWorldConfig(task="reach-v3").mesh_cell == 0.01
    assert MetaWorldConfig(task="reach-v3", mesh_cell=None).mesh_cell is None
