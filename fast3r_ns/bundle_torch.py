"""A Levenberg-Marquardt bundle adjustment in torch, for a GPU: the same problem as pycolmap's Ceres solve in
``fast3r_ns.refine`` (SIMPLE_PINHOLE cameras with one focal per camera group, the principal points fixed, world-to-
camera poses, optionally free track points, a Cauchy loss on the reprojection residuals), solved with the Schur
complement: the points' 3x3 blocks are eliminated and the reduced camera system (6 per free pose + 1 per focal,
about 1200 unknowns for 200 views) is a dense Cholesky. pycolmap's PyPI wheel has no CUDA, and its Ceres barely
uses more threads (benchmarks/bundle_scaling.py), so on the GPU machine this is where the adjustment's time goes.

The robust loss enters as iteratively re-weighted least squares (weights rho'(s) of the squared residual norm s),
which has the same minimum as Ceres' corrected residuals. Float64 throughout.
Conventions: ``fast3r_ns.geometry.conventions`` (original-image pixels, OpenCV axes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

_PAIR_CHUNK = 1 << 19  # observation pairs per chunk of the Schur complement (49 float64 each)


@dataclass
class Problem:
    """A bundle-adjustment problem; tensors on the solver's device, float64 / int64."""

    world_to_cam: torch.Tensor  # [V, 3, 4]
    focal: torch.Tensor  # [G] one focal per camera group
    principal: torch.Tensor  # [V, 2] (cx, cy), fixed
    group: torch.Tensor  # [V] camera group of each view
    points: torch.Tensor  # [T, 3]
    view: torch.Tensor  # [O] view of each observation
    track: torch.Tensor  # [O] point of each observation
    pixel: torch.Tensor  # [O, 2]
    constant_pose: torch.Tensor  # [V] bool
    refine_focal: bool
    refine_points: bool


@dataclass
class Solution:
    world_to_cam: torch.Tensor  # [V, 3, 4]
    focal: torch.Tensor  # [G]
    points: torch.Tensor  # [T, 3]
    iterations: int
    initial_cost: float
    final_cost: float

    def brief_report(self) -> str:
        """A line like Ceres' brief report (``refine._iterations`` reads the iterations)."""
        return (
            f"Torch LM Report: Iterations: {self.iterations}, Initial cost: {self.initial_cost:.6e}, "
            f"Final cost: {self.final_cost:.6e}"
        )


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] cross-product matrices of [N, 3]."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)


def _exp_so3(omega: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] rotations exp([omega]x) (Rodrigues) of [N, 3]."""
    angle = omega.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    k = _skew(omega) / angle
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + torch.sin(angle) * k + (1.0 - torch.cos(angle)) * (k @ k)


class _Layout:
    """Columns of the reduced camera system: 6 per free pose (rotation, translation), 1 per refined focal; the
    last column (``size``) collects what is held."""

    def __init__(self, problem: Problem, fixed_translation: tuple[int, int] | None):
        device = problem.view.device
        count = len(problem.world_to_cam)
        free = ~problem.constant_pose
        base = torch.full((count,), -1, dtype=torch.int64, device=device)
        base[free] = torch.arange(int(free.sum()), device=device) * 6
        poses = 6 * int(free.sum())
        groups = len(problem.focal)
        self.size = poses + (groups if problem.refine_focal else 0)
        column = base[:, None] + torch.arange(6, device=device)  # [V, 6]
        column[~free] = self.size
        if fixed_translation is not None:
            column[fixed_translation[0], 3 + fixed_translation[1]] = self.size
        focal_column = (
            poses + torch.arange(groups, device=device)
            if problem.refine_focal
            else torch.full((groups,), self.size, device=device)
        )
        self.pose_column = column
        self.focal_column = focal_column
        # [O, 7] columns of each observation's camera unknowns
        self.observation = torch.cat([column[problem.view], focal_column[problem.group[problem.view]][:, None]], dim=1)


def _observation_pairs(track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (a, b) of observations of the same track, a == b included: [P], [P]."""
    order = np.argsort(track, kind="stable")
    lengths = np.bincount(track)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    counts = lengths[track[order]]  # for each sorted observation, its track's length
    first = np.repeat(order, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    second = order[np.repeat(starts[track[order]], counts) + within]
    return first, second


def _gauge(problem: Problem) -> tuple[Problem, tuple[int, int] | None]:
    """With free points and fewer than two held poses, hold the first free pose (none held) and the translation
    component of the next free view that carries the scale (as COLMAP's TWO_CAMS_FROM_WORLD gauge)."""
    if not problem.refine_points or int(problem.constant_pose.sum()) >= 2:
        return problem, None
    constant = problem.constant_pose.clone()
    free = torch.nonzero(~constant).flatten()
    if int(constant.sum()) == 0 and len(free):
        constant[free[0]] = True
        free = free[1:]
    if not len(free):
        return replace(problem, constant_pose=constant), None
    anchor = int(torch.nonzero(constant).flatten()[0])
    other = int(free[0])
    rotation, translation = problem.world_to_cam[:, :, :3], problem.world_to_cam[:, :, 3]
    offset = translation[other] - rotation[other] @ rotation[anchor].T @ translation[anchor]
    return replace(problem, constant_pose=constant), (other, int(offset.abs().argmax()))


def _residuals(problem: Problem, world_to_cam, focal, points):
    """Residuals [O, 2] and camera-frame points [O, 3] of every observation."""
    pose = world_to_cam[problem.view]
    camera = (pose[:, :, :3] @ points[problem.track][:, :, None])[..., 0] + pose[:, :, 3]
    normalized = camera[:, :2] / camera[:, 2:3]
    projected = focal[problem.group[problem.view]][:, None] * normalized + problem.principal[problem.view]
    return projected - problem.pixel, camera


def _add_blocks(rows: torch.Tensor, columns: torch.Tensor, blocks: torch.Tensor, size: int) -> torch.Tensor:
    """[size, size] sum of the blocks [N, r, c] at their rows [N, r] and columns [N, c] of the reduced system;
    entries in row or column ``size`` (held unknowns) are dropped."""
    total = torch.zeros((size + 1) * (size + 1), dtype=blocks.dtype, device=blocks.device)
    total.index_add_(0, (rows[:, :, None] * (size + 1) + columns[:, None, :]).reshape(-1), blocks.reshape(-1))
    return total.reshape(size + 1, size + 1)[:size, :size]


def _cost(residual: torch.Tensor, scale: float) -> float:
    """0.5 sum of the Cauchy loss a^2 log(1 + s / a^2) of the squared residual norms s (Ceres' cost)."""
    squared = residual.square().sum(-1)
    return float(0.5 * (scale**2 * torch.log1p(squared / scale**2)).sum())


@dataclass
class _Linearised:
    """The normal equations at the current unknowns: the camera block, its coupling to the points (per
    observation) and the points' 3x3 blocks, with their gradients."""

    hessian: torch.Tensor  # [C, C]
    gradient: torch.Tensor  # [C]
    coupling: torch.Tensor | None  # [O, 7, 3]
    point_hessian: torch.Tensor | None  # [T, 3, 3]
    point_gradient: torch.Tensor | None  # [T, 3]

    def gradient_norm(self) -> float:
        """Max-norm of the gradient (Ceres' gradient tolerance reads it)."""
        parts = [self.gradient] + ([self.point_gradient.reshape(-1)] if self.point_gradient is not None else [])
        return float(torch.cat(parts).abs().max()) if sum(len(p) for p in parts) else 0.0


def _linearise(problem: Problem, layout: _Layout, world_to_cam, focal, residual, camera, loss_scale):
    """``_Linearised`` of the robust cost: the Cauchy loss enters as the weights rho'(s) of Jacobians [O, 2, 7]
    (rotation, translation, focal) and [O, 2, 3] (point)."""
    size, columns = layout.size, layout.observation
    dtype, device = camera.dtype, camera.device
    z = camera[:, 2]
    normalized = camera[:, :2] / z[:, None]
    f = focal[problem.group[problem.view]]
    d_camera = torch.zeros(len(z), 2, 3, dtype=dtype, device=device)  # d pixel / d camera-frame point
    d_camera[:, 0, 0] = d_camera[:, 1, 1] = f / z
    d_camera[:, :, 2] = -(f / z)[:, None] * normalized
    rotated = camera - world_to_cam[problem.view][:, :, 3]  # R X: the left rotation update turns it
    jac_camera = torch.cat([d_camera @ -_skew(rotated), d_camera, normalized[:, :, None]], dim=2)
    weight = 1.0 / (1.0 + residual.square().sum(-1) / loss_scale**2)
    weighted = jac_camera.transpose(1, 2) * weight[:, None, None]  # [O, 7, 2]
    hessian = _add_blocks(columns, columns, weighted @ jac_camera, size)
    gradient = torch.zeros(size + 1, dtype=dtype, device=device)
    gradient.index_add_(0, columns.reshape(-1), (weighted @ residual[:, :, None]).reshape(-1))
    if not problem.refine_points:
        return _Linearised(hessian, gradient[:size], None, None, None)
    count = len(problem.points)
    jac_point = d_camera @ world_to_cam[problem.view][:, :, :3]
    weighted_point = jac_point.transpose(1, 2) * weight[:, None, None]
    point_hessian = torch.zeros(count, 3, 3, dtype=dtype, device=device)
    point_hessian.index_add_(0, problem.track, weighted_point @ jac_point)
    point_gradient = torch.zeros(count, 3, dtype=dtype, device=device)
    point_gradient.index_add_(0, problem.track, (weighted_point @ residual[:, :, None])[..., 0])
    return _Linearised(hessian, gradient[:size], weighted @ jac_point, point_hessian, point_gradient)


def _step(problem: Problem, layout: _Layout, system: _Linearised, damping: float, pairs):
    """The damped Gauss-Newton step (H + damping diag(H)) x = -g, the points eliminated by the Schur complement:
    camera step [C + 1] (0 in the held column), point step [T, 3] (None) and the model's predicted cost
    reduction; None where the reduced system is not positive definite."""
    size, columns = layout.size, layout.observation
    dtype, device = system.hessian.dtype, system.hessian.device
    diagonal = system.hessian.diagonal().clamp(1e-6, 1e32)
    damped, rhs = system.hessian + torch.diag(damping * diagonal), -system.gradient
    if problem.refine_points:
        point_diagonal = system.point_hessian.diagonal(dim1=1, dim2=2).clamp(1e-6, 1e32)
        inverse = torch.linalg.inv(system.point_hessian + torch.diag_embed(damping * point_diagonal))
        solved = system.coupling @ inverse[problem.track]  # [O, 7, 3] W V^-1 of each observation
        first, second = pairs
        for start in range(0, len(first), _PAIR_CHUNK):
            a, b = first[start : start + _PAIR_CHUNK], second[start : start + _PAIR_CHUNK]
            damped = damped - _add_blocks(columns[a], columns[b], solved[a] @ system.coupling[b].transpose(1, 2), size)
        back = torch.zeros(size + 1, dtype=dtype, device=device)
        back.index_add_(0, columns.reshape(-1), (solved @ system.point_gradient[problem.track][:, :, None]).reshape(-1))
        rhs = rhs + back[:size]
    factor, info = torch.linalg.cholesky_ex(damped)
    if int(info) != 0:
        return None
    step = torch.cholesky_solve(rhs[:, None], factor)[:, 0]
    if not bool(torch.isfinite(step).all()):
        return None
    predicted = 0.5 * float(step @ (damping * diagonal * step - system.gradient))
    full = torch.cat([step, torch.zeros(1, dtype=dtype, device=device)])
    if not problem.refine_points:
        return full, None, predicted
    coupled = torch.zeros(len(problem.points), 3, dtype=dtype, device=device)
    coupled.index_add_(0, problem.track, (system.coupling.transpose(1, 2) @ full[columns][:, :, None])[..., 0])
    point_step = -(inverse @ (system.point_gradient + coupled)[:, :, None])[..., 0]
    predicted += 0.5 * float((point_step * (damping * point_diagonal * point_step - system.point_gradient)).sum())
    return full, point_step, predicted


def solve(
    problem: Problem,
    loss_scale: float,
    max_iterations: int = 50,
    function_tolerance: float = 0.0,
    parameter_tolerance: float = 0.0,
    gradient_tolerance: float = 1e-4,
) -> Solution:
    """Minimise the robust reprojection cost of ``problem`` by Levenberg-Marquardt with Ceres' trust-region rules
    and stopping tests (see the module docstring): at most ``max_iterations`` steps (rejected ones count); stops
    when the gradient's max-norm is at most ``gradient_tolerance``, a step changes the unknowns by at most
    ``parameter_tolerance`` of them or lowers the cost by at most ``function_tolerance`` of it."""
    problem, fixed_translation = _gauge(problem)
    layout = _Layout(problem, fixed_translation)
    device = problem.points.device
    world_to_cam, focal, points = problem.world_to_cam.clone(), problem.focal.clone(), problem.points.clone()
    pairs = None
    if problem.refine_points:
        pairs = tuple(torch.from_numpy(p).to(device) for p in _observation_pairs(problem.track.cpu().numpy()))
    residual, camera = _residuals(problem, world_to_cam, focal, points)
    cost = initial = _cost(residual, loss_scale)
    damping, factor, iterations = 1e-4, 2.0, 0
    system = None
    while iterations < max_iterations and layout.size > 0:
        if system is None:
            system = _linearise(problem, layout, world_to_cam, focal, residual, camera, loss_scale)
            if system.gradient_norm() <= gradient_tolerance:
                break
        iterations += 1
        step = _step(problem, layout, system, damping, pairs)
        if step is not None:
            camera_step, point_step, predicted = step
            moved = torch.cat([camera_step] + ([point_step.reshape(-1)] if point_step is not None else [])).norm()
            magnitude = torch.cat([world_to_cam.reshape(-1), focal, points.reshape(-1)]).norm()
            if float(moved) <= parameter_tolerance * (float(magnitude) + parameter_tolerance):
                break
            candidate = _apply(world_to_cam, focal, camera_step, layout) + (
                points if point_step is None else points + point_step,
            )
            new_residual, new_camera = _residuals(problem, *candidate)
            new_cost = _cost(new_residual, loss_scale)
            if np.isfinite(new_cost) and new_cost < cost:
                ratio = (cost - new_cost) / predicted if predicted > 0 else 1.0
                damping *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                factor, change = 2.0, cost - new_cost
                world_to_cam, focal, points = candidate
                residual, camera, cost, system = new_residual, new_camera, new_cost, None
                if change <= function_tolerance * (cost + change):
                    break
                continue
        damping *= factor
        factor *= 2.0
    return Solution(world_to_cam, focal, points, iterations, initial, cost)


def _apply(world_to_cam: torch.Tensor, focal: torch.Tensor, step: torch.Tensor, layout: _Layout):
    """Poses and focals moved by a camera step (``step[layout.size]`` is 0): R <- exp(omega) R, t <- t + dt."""
    pose_step = step[layout.pose_column]  # [V, 6]
    rotation = _exp_so3(pose_step[:, :3]) @ world_to_cam[:, :, :3]
    translation = world_to_cam[:, :, 3] + pose_step[:, 3:]
    return torch.cat([rotation, translation[:, :, None]], dim=2), focal + step[layout.focal_column]
