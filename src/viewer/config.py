"""The `viewer` group's schema: nerfstudio's `--viewer.*` options (ns-train nerfacto --help), snake_case.

Both options of the group (`viewer=none`, the default, and `viewer=web`) extend this one schema and
differ only in their `_target_`, so a run folder's saved `viewer` values always fit, whichever option a
resumed run or `view.py` picks. Two things differ from nerfstudio on purpose: `websocket_host` is
127.0.0.1 (nerfstudio binds 0.0.0.0, every interface), and `make_share_url` has no field, since viser's
share URL tunnels the viewer through a relay on the internet (the flag is refused, saying so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from config.ranges import ranged

PORT = dict(ge=1, le=65535)


@dataclass
class ViewerConfig:
    _target_: str = "viewer.NoViewer"
    # the viewer's own log (its address, clients, each render), in the run directory
    relative_log_filename: str = "viewer_log_filename.txt"
    websocket_port: Optional[int] = ranged(None, **PORT, why="null: websocket_port_default, or the next free port "
                                           "after it")
    websocket_port_default: int = ranged(7007, **PORT)
    websocket_host: str = "127.0.0.1"  # 0.0.0.0 serves every interface: anyone who reaches the machine can pause
    num_rays_per_chunk: int = ranged(32768, ge=1, why="the most rays per forward pass of a viewer render")
    max_num_display_images: int = ranged(512, ge=0, also=(-1,), why="-1: every training camera")
    quit_on_train_completion: bool = False  # false: the viewer keeps serving the trained model until Ctrl-C
    image_format: str = ranged("jpeg", choices=("jpeg", "png"))
    jpeg_quality: int = ranged(90, ge=1, le=100)
    # nerfstudio's "Train Util" control: the share of the time training keeps while the viewer renders
    # (the rest goes to renders, and only while a render is wanted); also a slider in the viewer
    train_util: float = ranged(0.95, gt=0, le=1, why="1: render only while training is paused or done")
