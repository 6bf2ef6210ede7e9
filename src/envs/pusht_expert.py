"""Scripted expert for gym-pusht's PushT-v0.

Why a geometric pushing controller: PushT's physics is quasi-static (the space's damping is 0, so
the block keeps no velocity of its own and moves only while the kinematic disc pushes it) and
frictionless (no shape friction is set), so a push at a boundary point moves the block along that
point's inward normal with a rotation fixed by the lever arm about the centre of gravity. The
block's response to every candidate contact is therefore known in closed form, and choosing where
to push reduces to comparing those twists with the remaining pose error: no simulation lookahead,
about a millisecond per step, and the same situation always yields the same, smooth behaviour
(travel around the block on an inflated hull, approach along the normal, push with a depth that
shrinks with the remaining error, which doubles as the fine alignment near the goal), which is what
a policy can imitate. Only face normals are used by default: pushing a convex corner along a
diagonal is unstable (the disc slides off it), which showed up as peck-and-retry motions.
"""

from __future__ import annotations

import numpy as np
import shapely.geometry as sg
from shapely.ops import unary_union

_TAU = 2.0 * np.pi
# Disc-to-contact offsets (px) that start a push (lined up on the approach line) and end one (slid
# off it): the gap between them keeps a push going while the block turns under the disc.
_ENTER_LATERAL, _ENTER_SLACK = 4.0, 4.0
_LEAVE_LATERAL, _LEAVE_SLACK = 16.0, 8.0


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _wrap(angle: float) -> float:
    return (angle + np.pi) % _TAU - np.pi


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class _BlockGeometry:
    """Everything about the block that is fixed in its own frame, computed once per shape.

    Candidate contacts, their twists and their positions on the travel hull do not change while
    the block moves, so the per-step work is a rotation of the pose error and a few dot products.
    """

    def __init__(self, block, agent_radius: float, hull_margin: float, pre_distance: float,
                 clear_margin: float, edge_spacing: float, corner_normals: int, angle_scale: float):
        self.boxes = []
        polys = []
        for shape in block.shapes:
            verts = np.array([tuple(v) for v in shape.get_vertices()], dtype=float)
            polys.append(sg.Polygon(verts))
            self.boxes.append((verts.min(axis=0), verts.max(axis=0)))
        outline = sg.polygon.orient(unary_union(polys), 1.0)
        self.cog = np.array(tuple(block.center_of_gravity), dtype=float)
        self.mass = float(block.mass)
        self.moment = float(block.moment)
        self.radius = agent_radius

        ring = np.array(outline.exterior.coords)[:-1]
        points, normals = [], []
        n_vert = len(ring)
        for i in range(n_vert):
            a, b = ring[i], ring[(i + 1) % n_vert]
            edge = b - a
            length = np.linalg.norm(edge)
            tangent = edge / length
            outward = np.array([tangent[1], -tangent[0]])
            count = max(2, int(np.ceil(length / edge_spacing)) + 1)
            for t in np.linspace(0.0, length, count):
                points.append(a + tangent * t)
                normals.append(outward)
            prev_edge = a - ring[i - 1]
            if _cross(prev_edge, edge) > 0:
                prev_tangent = prev_edge / np.linalg.norm(prev_edge)
                prev_out = np.array([prev_tangent[1], -prev_tangent[0]])
                a0 = np.arctan2(prev_out[1], prev_out[0])
                a1 = np.arctan2(outward[1], outward[0])
                span = _wrap(a1 - a0)
                for k in range(1, corner_normals + 1):
                    ang = a0 + span * k / (corner_normals + 1)
                    points.append(a.copy())
                    normals.append(np.array([np.cos(ang), np.sin(ang)]))
        points = np.array(points)
        normals = np.array(normals)
        centres = points + agent_radius * normals
        keep = np.array([outline.distance(sg.Point(c)) >= agent_radius - 0.5 for c in centres])
        self.points = points[keep]
        self.n_out = normals[keep]
        self.centres = centres[keep]
        self.pre = self.centres + pre_distance * self.n_out
        self.pre_margin = np.minimum(clear_margin, self.clearance(self.pre) - agent_radius - 1.0)

        n_in = -self.n_out
        lever = _cross(self.points - self.cog, n_in)
        impulse = 1.0 / (1.0 / self.mass + lever**2 / self.moment)
        self.twist = np.concatenate(
            [impulse[:, None] * n_in / self.mass, (angle_scale * impulse * lever / self.moment)[:, None]],
            axis=1,
        )
        self.twist_norm = np.linalg.norm(self.twist, axis=1)

        hull = outline.convex_hull.buffer(agent_radius + hull_margin, join_style="mitre")
        hull = sg.polygon.orient(hull, 1.0)
        self.hull_ring = hull.exterior
        self.hull_vertices = np.array(hull.exterior.coords)[:-1]
        self.hull_length = self.hull_ring.length
        self.hull_s = np.array([self.hull_ring.project(sg.Point(v)) for v in self.hull_vertices])
        self.pre_s = np.array([self.hull_ring.project(sg.Point(p)) for p in self.pre])
        self.pre_on_hull = np.array(
            [tuple(self.hull_ring.interpolate(s).coords[0]) for s in self.pre_s], dtype=float
        )
        self.pre_radial = np.linalg.norm(self.pre - self.pre_on_hull, axis=1)

    def clearance(self, pts: np.ndarray) -> np.ndarray:
        """Distance from points (local frame) to the block, through its axis-aligned boxes."""
        best = np.full(pts.shape[:-1], np.inf)
        for lo, hi in self.boxes:
            d = np.maximum(np.maximum(lo - pts, pts - hi), 0.0)
            best = np.minimum(best, np.linalg.norm(d, axis=-1))
        return best

    def segments_clear(self, start: np.ndarray, ends: np.ndarray, margin, step: float = 4.0) -> np.ndarray:
        """Whether the disc can move straight from start to each end without touching the block."""
        ends = np.atleast_2d(ends)
        length = np.linalg.norm(ends - start, axis=1).max()
        n = max(2, int(np.ceil(length / step)) + 1)
        t = np.linspace(0.0, 1.0, n)
        pts = start + (ends - start)[:, None, :] * t[None, :, None]
        margin = np.broadcast_to(np.asarray(margin, dtype=float), (len(ends),))
        return (self.clearance(pts) > (self.radius + margin)[:, None]).all(axis=1)

    def hull_arc(self, s_from: float, s_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shorter way round the hull between two arc positions: its length and its direction."""
        forward = (s_to - s_from) % self.hull_length
        backward = self.hull_length - forward
        return np.minimum(forward, backward), forward <= backward


class PushTExpert:
    """Pushes the T to its goal pose by choosing, every step, the contact whose push best reduces
    the pose error, travelling there around the block and pushing along the contact normal.

    `act(env)` reads the true state from the unwrapped `PushTEnv` and returns the next target
    position for the disc; it keeps the chosen contact between calls, so call `reset()` at the
    start of every episode. Its output moves at most `max_action_step` px per step, so switching
    contacts never makes the commanded position jump.

    Gains: `angle_scale` (px per radian) weighs rotation against translation in the pose error;
    `travel_cost` (per px) trades a better-aligned contact against the way round to it;
    `switch_margin` is the hysteresis that keeps a push going; `push_gain`, `min_push_depth`,
    `max_push_depth` set how far past the contact the disc is commanded (the push speed).
    """

    def __init__(
        self,
        angle_scale: float = 60.0,
        travel_speed: float = 220.0,
        push_gain: float = 1.0,
        max_push_depth: float = 20.0,
        min_push_depth: float = 1.5,
        travel_cost: float = 1.0 / 600.0,
        switch_margin: float = 0.1,
        min_alignment: float = 0.3,
        hull_margin: float = 12.0,
        pre_distance: float = 12.0,
        clear_margin: float = 3.0,
        edge_spacing: float = 6.0,
        corner_normals: int = 0,
        max_action_step: float = 30.0,
    ):
        self.angle_scale = angle_scale
        self.travel_speed = travel_speed
        self.push_gain = push_gain
        self.max_push_depth = max_push_depth
        self.min_push_depth = min_push_depth
        self.travel_cost = travel_cost
        self.switch_margin = switch_margin
        self.min_alignment = min_alignment
        self.hull_margin = hull_margin
        self.pre_distance = pre_distance
        self.clear_margin = clear_margin
        self.edge_spacing = edge_spacing
        self.corner_normals = corner_normals
        self.max_action_step = max_action_step
        self._geometry = None
        self._geometry_key = None
        self.reset()

    def reset(self) -> None:
        self.contact: int | None = None
        self.pushing = False
        self._last_action: np.ndarray | None = None
        self._lag = 0.2

    def _geometry_for(self, env) -> _BlockGeometry:
        block = env.block
        radius = float(next(iter(env.agent.shapes)).radius)
        key = (
            tuple(tuple(tuple(v) for v in s.get_vertices()) for s in block.shapes),
            tuple(block.center_of_gravity), block.mass, block.moment, radius,
        )
        if key != self._geometry_key:
            self._geometry = _BlockGeometry(
                block, radius, self.hull_margin, self.pre_distance, self.clear_margin, self.edge_spacing,
                self.corner_normals, self.angle_scale,
            )
            self._geometry_key = key
        return self._geometry

    def act(self, env) -> np.ndarray:
        """Next target position for the disc, float32 (2,) in [0, 512]."""
        env = getattr(env, "unwrapped", env)
        geo = self._geometry_for(env)
        self._lag = float(env.k_v) / float(env.k_p)
        block = env.block
        theta = float(block.angle)
        rot = _rot(theta)
        origin = np.array(tuple(block.position), dtype=float)
        goal = np.asarray(env.goal_pose, dtype=float)
        cog_world = origin + rot @ geo.cog
        goal_cog = goal[:2] + _rot(goal[2]) @ geo.cog
        error = np.concatenate([rot.T @ (goal_cog - cog_world), [self.angle_scale * _wrap(goal[2] - theta)]])
        error_norm = np.linalg.norm(error) + 1e-9

        agent = rot.T @ (np.array(tuple(env.agent.position), dtype=float) - origin)

        proj = geo.twist @ error / geo.twist_norm
        align = proj / error_norm
        pre_world = origin + geo.pre @ rot.T
        centre_world = origin + geo.centres @ rot.T
        reachable = (centre_world.min(axis=1) >= 0.0) & (centre_world.max(axis=1) <= 512.0)
        reachable &= (pre_world.min(axis=1) >= 0.0) & (pre_world.max(axis=1) <= 512.0)

        travel = self._travel_costs(geo, agent)
        score = np.where(reachable & (proj > 0), align - self.travel_cost * travel, -np.inf)
        best = int(np.argmax(score))

        keep = (
            self.contact is not None
            and np.isfinite(score[self.contact])
            and align[self.contact] >= self.min_alignment
            and score[self.contact] + self.switch_margin >= score[best]
        )
        if not keep:
            if self.contact != best:
                self.pushing = False
            self.contact = best
        c = self.contact

        target = origin + rot @ self._target(geo, agent, c, proj[c] / geo.twist_norm[c])

        previous = self._last_action if self._last_action is not None else np.array(tuple(env.agent.position))
        change = target - previous
        norm = np.linalg.norm(change)
        if norm > self.max_action_step:
            target = previous + change * (self.max_action_step / norm)
        target = np.clip(target, 0.0, 512.0)
        self._last_action = target
        return target.astype(np.float32)

    def _travel_costs(self, geo: _BlockGeometry, agent: np.ndarray) -> np.ndarray:
        straight = np.linalg.norm(geo.pre - agent, axis=1)
        clear = geo.segments_clear(agent, geo.pre, geo.pre_margin)
        s_agent = geo.hull_ring.project(sg.Point(agent))
        on_hull = np.array(geo.hull_ring.interpolate(s_agent).coords[0])
        arc, _ = geo.hull_arc(s_agent, geo.pre_s)
        around = np.linalg.norm(agent - on_hull) + arc + geo.pre_radial
        cost = np.where(clear, straight, around)
        if self.contact is not None and self.pushing:
            cost[self.contact] = 0.0
        return cost

    def _target(self, geo: _BlockGeometry, agent: np.ndarray, c: int, push: float) -> np.ndarray:
        """Target in the block frame: along the approach line when lined up, else along a path."""
        n_out = geo.n_out[c]
        rel = agent - geo.centres[c]
        along = rel @ n_out
        lateral = abs(_cross(n_out, rel))
        lined_up = lateral < _ENTER_LATERAL and -2.0 <= along <= self.pre_distance + _ENTER_SLACK
        if self.pushing or lined_up:
            self.pushing = lateral < _LEAVE_LATERAL and along <= self.pre_distance + _LEAVE_SLACK
            depth = np.clip(self.push_gain * push, self.min_push_depth, self.max_push_depth)
            return geo.centres[c] - n_out * depth
        return self._path_target(geo, agent, c)

    def _path_target(self, geo: _BlockGeometry, agent: np.ndarray, c: int) -> np.ndarray:
        """Carrot on the way to the contact: straight when nothing is in the way, else round the
        hull; it leads the disc by speed * k_v / k_p, the distance at which the env's PD
        controller settles to that speed, so the disc moves at a steady pace."""
        goal = geo.pre[c]
        if geo.segments_clear(agent, goal, geo.pre_margin[c])[0]:
            path = [goal]
        else:
            s_agent = geo.hull_ring.project(sg.Point(agent))
            s_goal = geo.pre_s[c]
            _, forward = geo.hull_arc(s_agent, np.array([s_goal]))
            length = geo.hull_length
            if forward[0]:
                offsets = (geo.hull_s - s_agent) % length
                span = (s_goal - s_agent) % length
            else:
                offsets = (s_agent - geo.hull_s) % length
                span = (s_agent - s_goal) % length
            inside = np.where(offsets < span)[0]
            inside = inside[np.argsort(offsets[inside])]
            path = [np.array(geo.hull_ring.interpolate(s_agent).coords[0])]
            path += [geo.hull_vertices[i] for i in inside]
            path += [geo.pre_on_hull[c], goal]
            margins = [self.clear_margin] * (len(path) - 1) + [geo.pre_margin[c]]
            for k in range(len(path) - 1, 0, -1):
                if geo.segments_clear(agent, path[k], margins[k])[0]:
                    path = path[k:]
                    break
        path.append(geo.centres[c])
        lookahead = self.travel_speed * self._lag
        pos = agent
        for waypoint in path:
            seg = waypoint - pos
            dist = np.linalg.norm(seg)
            if dist >= lookahead:
                return pos + seg / dist * lookahead
            lookahead -= dist
            pos = waypoint
        return pos
