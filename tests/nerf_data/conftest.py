"""Small generated scenes shared by the nerf data tests (rendered once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ns_scene(tmp_path_factory):
    from data.nerf.synthetic import write_nerfstudio

    return write_nerfstudio(tmp_path_factory.mktemp("scenes") / "ns", n_views=12, size=32, masks=True)


@pytest.fixture(scope="session")
def blender_scene(tmp_path_factory):
    from data.nerf.synthetic import write_blender

    return write_blender(tmp_path_factory.mktemp("scenes") / "blender", n_views=10, size=32, n_eval_views=3)
