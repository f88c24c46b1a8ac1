"""Mask-video synthesis fitted on one real sequence: the entry point every texturing generator calls.

``MaskVideoModel.fit(seq)`` measures, on the full nucleus masks of the training sequence
(``benchmark.ctc.crops.full_masks``), a 60-ray contour point-distribution model per pseudo-stage
(0 interphase, 1 the last frames before a division, 2 the first frames after one: stages come from
lineage timing since CTC has no stage labels), the frame-to-frame persistence of the shape
coefficients, per-stage relative brightness, and the scene statistics of ``scene.fit_scene``.
Brightness is log-normal: ``intensity_level`` is the geometric mean of the interphase cells' mean
levels (ADU above background, one value per cell and frame, so big nuclei do not weigh more) and
``intensity_log_sigma`` their log spread; a cell's ``CellState.intensity`` is its relative gain
``exp(sigma z)`` times its stage factor, so ``intensity_level * intensity`` is its mean level in ADU.
``sample`` simulates a new video: cells move by a persistent random walk, rotate, change shape by an
AR(1) process on the PDM coefficients, divide after a log-normal cycle into two daughters placed
along the mother's major axis, enter through the borders at the real rate and leave when their centre
exits; a hard, direction-aware repulsion keeps contours from overlapping so no listed cell is hidden.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, crop_size_for, full_masks
from generators.masks.scene import SceneParams, children_of, fit_scene, tra_centroids
from generators.masks.shape_model import (
    RAY_ANGLES,
    ContourPDM,
    major_axis_angle,
    mask_radii,
    rasterize,
)
from generators.masks.video import CellState, MaskVideo

STAGES = (0, 1, 2)  # interphase, pre-division, post-division


@dataclass
class MaskVideoConfig:
    """Knobs of the fit and the simulation (frames are frames of the training sequence)."""

    pre_division_frames: int = 2  # pseudo-stage 1: the mother's last frames before it divides
    post_division_frames: int = 2  # pseudo-stage 2: a daughter's first frames
    min_stage_samples: int = 12  # fewer contours than this -> the stage reuses the interphase model
    min_gap: float = 1.0  # px kept free between neighbouring contours
    stage_blend: float = 0.5  # shape memory kept when a cell switches pseudo-stage
    max_fit_frames: int | None = None  # subsample annotated frames (evenly) to bound fitting time
    progress: bool = False


@dataclass
class CellObservation:
    """One real cell in one annotated frame, in canonical form."""

    label: int
    t: int
    centre: tuple[float, float]
    angle: float
    radii: np.ndarray
    intensity: float  # mean raw intensity inside the mask minus the frame's background
    stage: int


def pseudo_stage(seq: CTCSequence, label: int, t: int, config: MaskVideoConfig,
                 kids: dict[int, list[int]]) -> int:
    """Stage from lineage timing: 1 in the last frames before a division, 2 in the first after one."""
    track = seq.tracks.get(label)
    if track is None:
        return 0
    if len(kids.get(label, [])) >= 2 and track.end - t < config.pre_division_frames:
        return 1
    mother = track.parent
    if mother and len(kids.get(mother, [])) >= 2 and t - track.begin < config.post_division_frames:
        return 2
    return 0


def observe_cells(seq: CTCSequence, config: MaskVideoConfig) -> list[CellObservation]:
    """Canonical contours, poses and brightness of every real cell not touching the frame border."""
    frames = annotated_frames(seq)
    if config.max_fit_frames and len(frames) > config.max_fit_frames:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, config.max_fit_frames).astype(int)]
    kids = children_of(seq.tracks) if seq.has_tracks else {}
    observations = []
    for t in tqdm(frames, desc="observe cells", disable=not config.progress, leave=False):
        masks = full_masks(seq, t)
        image = seq.image(t).astype(np.float32)
        far = ~ndimage.binary_dilation(masks > 0, iterations=5)
        background = float(np.median(image[far])) if far.any() else float(np.median(image))
        height, width = masks.shape
        for label, sl in enumerate(ndimage.find_objects(masks), start=1):
            if sl is None:
                continue
            if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == height or sl[1].stop == width:
                continue  # shape cut by the border
            pad = (slice(max(sl[0].start - 2, 0), sl[0].stop + 2), slice(max(sl[1].start - 2, 0), sl[1].stop + 2))
            mask = masks[pad] == label
            if mask.sum() < 5:
                continue
            angle, (cy, cx) = major_axis_angle(mask)
            radii = mask_radii(mask, angle, (cy, cx))
            intensity = float(image[pad][mask].mean()) - background
            observations.append(CellObservation(label, t, (cy + pad[0].start, cx + pad[1].start), angle, radii,
                                                 intensity, pseudo_stage(seq, label, t, config, kids)))
    return observations


def _pair_correlation(pairs: list[tuple[np.ndarray, np.ndarray, int]], n_modes: int) -> np.ndarray:
    """Per-mode lag-1 correlation of standardised coefficients from (b_t, b_t+lag, lag) pairs."""
    rho = np.full(n_modes, 0.8)
    if len(pairs) < 10:
        return rho
    for j in range(n_modes):
        estimates, weights = [], []
        for lag in (1, 2, 3):
            sel = [(a[j], b[j]) for a, b, g in pairs if g == lag]
            if len(sel) < 10:
                continue
            x, y = np.asarray(sel).T
            c = float(np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y) + 1e-12))
            estimates.append(max(c, 1e-3) ** (1.0 / lag))
            weights.append(len(sel))
        if estimates:
            rho[j] = float(np.average(estimates, weights=weights))
    return np.clip(rho, 0.0, 0.99)


@dataclass
class _Cell:
    label: int
    parent: int
    pos: np.ndarray
    vel: np.ndarray
    angle: float
    b: np.ndarray
    stage: int
    birth: int
    division: int | None
    intensity: float
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class MaskVideoModel:
    """Fitted shape + scene model; ``sample`` draws new mask videos (see the module docstring)."""

    crop_size: int
    frame_shape: tuple[int, int]
    shapes: dict[int, ContourPDM]
    shape_persistence: list[float]  # per-mode AR(1) coefficient of the interphase model
    scene: SceneParams
    intensity_cv: float  # std/mean of the per-track brightness (reported; sampling uses the log spread)
    stage_intensity: list[float]  # brightness factor per pseudo-stage (interphase = 1)
    config: MaskVideoConfig = field(default_factory=MaskVideoConfig)
    fitted_on: str = ""
    intensity_log_sigma: float = 0.0  # std of log cell level: the log-normal gain's spread
    intensity_level: float = 0.0  # ADU above background of gain 1: geometric mean over tracks (0: unknown)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, seq: CTCSequence, crop_size: int | None = None,
            config: MaskVideoConfig | None = None) -> MaskVideoModel:
        """Fit shapes, pseudo-stages, brightness and scene statistics on one real annotated sequence."""
        config = config or MaskVideoConfig()
        if not seq.has_tracks:
            raise ValueError(f"{seq.track_file}: the training sequence needs TRA annotations (man_track.txt)")
        crop_size = crop_size or crop_size_for(seq)
        observations = observe_cells(seq, config)
        if len(observations) < 10:
            raise ValueError(f"{seq.image_dir}: only {len(observations)} cells with full masks; cannot fit a shape model")
        shapes: dict[int, ContourPDM] = {}
        base = ContourPDM.fit(np.stack([o.radii for o in observations if o.stage == 0]
                                       or [o.radii for o in observations]))
        shapes[0] = base
        for stage in (1, 2):
            radii = [o.radii for o in observations if o.stage == stage]
            shapes[stage] = ContourPDM.fit(np.stack(radii)) if len(radii) >= config.min_stage_samples else base

        by_key = {(o.label, o.t): o for o in observations}
        pairs = []
        for o in observations:
            for lag in (1, 2, 3):
                nxt = by_key.get((o.label, o.t + lag))
                if nxt is not None and o.stage == 0 and nxt.stage == 0:
                    pairs.append((base.coefficients(o.radii), base.coefficients(nxt.radii), lag))
                    break
        persistence = _pair_correlation(pairs, base.n_modes)

        track_level: dict[int, float] = {}
        for label in {o.label for o in observations}:
            values = [o.intensity for o in observations if o.label == label and o.stage == 0]
            if values:
                track_level[label] = float(np.median(values))
        levels = np.asarray(list(track_level.values()))
        positive = levels[levels > 0]
        intensity_cv = float(np.std(positive) / np.mean(positive)) if len(positive) > 1 else 0.1
        # log-normal gain fitted on every interphase cell-frame (each cell counts once, whatever its
        # size): a track keeps its gain for life, so the per-frame spread is what the crops must show
        observed = np.asarray([o.intensity for o in observations if o.stage == 0 and o.intensity > 0])
        logs = np.log(observed) if len(observed) else np.zeros(1)
        log_sigma = float(np.std(logs, ddof=1)) if len(observed) > 2 else math.sqrt(math.log(1 + intensity_cv**2))
        level = float(np.exp(np.mean(logs))) if len(observed) else 0.0
        stage_intensity = [1.0]
        for stage in (1, 2):
            ratios = [o.intensity / track_level[o.label] for o in observations
                      if o.stage == stage and track_level.get(o.label, 0) > 0]
            stage_intensity.append(float(np.median(ratios)) if len(ratios) >= 3 else 1.0)

        angles: dict[int, dict[int, float]] = {}
        for o in observations:
            angles.setdefault(o.t, {})[o.label] = o.angle
        scene = fit_scene(seq, tra_centroids(seq), angles)
        if not math.isfinite(scene.daughter_separation):
            post = shapes[2]
            scene.daughter_separation = float(2 * np.mean(post.mean))
        return cls(crop_size, tuple(seq.frame_shape), shapes, persistence.tolist(), scene, intensity_cv,
                   stage_intensity, config, repr(seq), float(np.clip(log_sigma, 0.0, 2.0)), level)

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        return {
            "crop_size": self.crop_size,
            "frame_shape": list(self.frame_shape),
            "shapes": {str(k): v.to_dict() for k, v in self.shapes.items()},
            "shape_persistence": list(self.shape_persistence),
            "scene": self.scene.to_dict(),
            "intensity_cv": self.intensity_cv,
            "stage_intensity": list(self.stage_intensity),
            "config": asdict(self.config),
            "fitted_on": self.fitted_on,
            "intensity_log_sigma": self.intensity_log_sigma,
            "intensity_level": self.intensity_level,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MaskVideoModel:
        cv = float(d["intensity_cv"])
        return cls(int(d["crop_size"]), tuple(d["frame_shape"]),
                   {int(k): ContourPDM.from_dict(v) for k, v in d["shapes"].items()},
                   [float(x) for x in d["shape_persistence"]], SceneParams.from_dict(d["scene"]),
                   cv, [float(x) for x in d["stage_intensity"]],
                   MaskVideoConfig(**d.get("config", {})), d.get("fitted_on", ""),
                   float(d.get("intensity_log_sigma", math.sqrt(math.log(1 + cv**2)))),
                   float(d.get("intensity_level", 0.0)))

    # ------------------------------------------------------------------ simulation
    def _rho(self, stage: int, n: int) -> np.ndarray:
        rho = np.asarray(self.shape_persistence, float)
        if stage == 0 or self.shapes[stage] is self.shapes[0]:
            return rho[:n] if len(rho) >= n else np.resize(rho, n)
        return np.full(n, float(np.mean(rho)))

    def _radii(self, cell: _Cell) -> np.ndarray:
        limit = (self.crop_size - 1) / 2 - 1
        return np.clip(self.shapes[cell.stage].radii(cell.b), 0.75, limit)

    def _gain(self, rng: np.random.Generator) -> float:
        """A new root cell's relative brightness: log-normal with the fitted spread, median 1 (one draw)."""
        return float(math.exp(self.intensity_log_sigma * rng.standard_normal()))

    def _cycle(self, rng: np.random.Generator) -> int | None:
        """Frames from birth to division, or None for a cell that never divides."""
        s = self.scene
        if rng.uniform() >= s.divide_fraction:
            return None
        return max(int(round(math.exp(rng.normal(s.cycle_log_mean, s.cycle_log_std)))),
                   self.config.pre_division_frames + self.config.post_division_frames + 1)

    def _new_cell(self, label: int, parent: int, pos: np.ndarray, t: int, rng: np.random.Generator,
                  stage: int, remaining: int | None, intensity: float, angle: float | None = None,
                  vel: np.ndarray | None = None) -> _Cell:
        model = self.shapes[stage]
        b = np.clip(rng.standard_normal(model.n_modes), -2.5, 2.5)
        sigma = self.scene.sigma_step
        cell = _Cell(label, parent, pos.astype(float), rng.normal(0, sigma, 2) if vel is None else vel.copy(),
                     rng.uniform(-math.pi, math.pi) if angle is None else angle, b, stage, t,
                     None if remaining is None else t + remaining, intensity)
        cell.radii = self._radii(cell)
        return cell

    def _stage_at(self, cell: _Cell, t: int) -> int:
        cfg = self.config
        if cell.division is not None and cell.division - t <= cfg.pre_division_frames:
            return 1
        if cell.parent and t - cell.birth < cfg.post_division_frames:
            return 2
        return 0

    def _separate(self, cells: list[_Cell], iterations: int = 30) -> None:
        """Push overlapping contours apart along the line of centres (direction-aware radii)."""
        if len(cells) < 2:
            return
        gap = self.config.min_gap
        pos = np.stack([c.pos for c in cells])
        reach = np.array([c.radii.max() for c in cells])
        radii = np.stack([c.radii for c in cells])
        angles = np.array([c.angle for c in cells])
        not_self = ~np.eye(len(cells), dtype=bool)
        for _ in range(iterations):
            diff = pos[None, :, :] - pos[:, None, :]  # i -> j
            dist = np.hypot(diff[..., 0], diff[..., 1])
            close = (dist < reach[:, None] + reach[None, :] + gap) & not_self
            ii, jj = np.nonzero(np.triu(close))
            if len(ii) == 0:
                break
            d = np.maximum(dist[ii, jj], 1e-6)
            unit = diff[ii, jj] / d[:, None]
            coincident = dist[ii, jj] <= 1e-5
            if coincident.any():
                unit[coincident] = np.stack([rng_free_push(int(i), int(j)) for i, j in
                                             zip(ii[coincident], jj[coincident], strict=True)])
            ri = _directional_radius(radii[ii], angles[ii], unit)
            rj = _directional_radius(radii[jj], angles[jj], -unit)
            # star-shaped contours: the ray along the centre line is exact; 10% slack for off-axis bulges
            deficit = 1.1 * (ri + rj) + gap - d
            hit = deficit > 0
            if not hit.any():
                break
            push = 0.5 * np.minimum(deficit[hit], 3.0)[:, None] * unit[hit]
            np.add.at(pos, ii[hit], -push)
            np.add.at(pos, jj[hit], push)
        for c, p in zip(cells, pos, strict=True):
            c.pos = p.copy()

    def _state(self, cell: _Cell, base_intensity: float) -> CellState:
        return CellState(cell.label, rasterize(cell.radii, self.crop_size),
                         (float(cell.pos[0]), float(cell.pos[1])), float(cell.angle), cell.stage,
                         float(base_intensity * self.stage_intensity[cell.stage]))

    def sample_with_contours(self, n_frames: int, shape: tuple[int, int] | None, rng: np.random.Generator,
                             progress: bool = False) -> tuple[MaskVideo, list[dict[int, np.ndarray]]]:
        """Like ``sample``, plus per frame ``{label: radii (60,)}`` (canonical contours with point correspondence).

        Radii let a texturing generator compute an exact canonical deformation between frames.
        """
        shape = tuple(int(s) for s in (shape or self.frame_shape))
        height, width = shape
        s = self.scene
        n0 = max(1, int(round(s.density * height * width)))
        next_label = 1
        cells: list[_Cell] = []
        for _ in range(n0):
            pos = np.array([rng.uniform(0, height - 1), rng.uniform(0, width - 1)])
            cycle = self._cycle(rng)
            remaining = None if cycle is None else int(math.ceil(rng.uniform(0.0, 1.0) * cycle))
            intensity = self._gain(rng)
            cell = self._new_cell(next_label, 0, pos, 0, rng, 0, remaining, intensity)
            cells.append(cell)
            next_label += 1
        for cell in cells:
            self._set_stage(cell, 0, rng)
        self._separate(cells, iterations=60)
        cells = [c for c in cells if 0 <= c.pos[0] <= height - 1 and 0 <= c.pos[1] <= width - 1]

        parents: dict[int, int] = {}
        frames: list[list[CellState]] = []
        contours: list[dict[int, np.ndarray]] = []
        innovation = s.sigma_step * math.sqrt(max(1 - s.persistence**2, 0.0))
        for t in tqdm(range(n_frames), desc="masks", disable=not progress, leave=False):
            if t > 0:
                survivors: list[_Cell] = []
                for cell in cells:
                    if cell.division is not None and t >= cell.division:
                        survivors.extend(self._divide(cell, t, next_label, rng))
                        parents[next_label], parents[next_label + 1] = cell.label, cell.label
                        next_label += 2
                        continue
                    cell.vel = s.persistence * cell.vel + innovation * rng.standard_normal(2)
                    cell.pos = cell.pos + cell.vel
                    cell.angle += s.sigma_rotation * rng.standard_normal()
                    self._set_stage(cell, t, rng)
                    survivors.append(cell)
                n_enter = rng.poisson(s.entry_rate * 2 * (height + width))
                for _ in range(n_enter):
                    survivors.append(self._entering_cell(next_label, t, shape, rng))
                    parents[next_label] = 0
                    next_label += 1
                self._separate(survivors)
                for c in survivors:
                    if c.parent and c.birth == t:  # newborn daughters always appear, both of them
                        c.pos = np.clip(c.pos, 0, [height - 1, width - 1])
                cells = [c for c in survivors if 0 <= c.pos[0] <= height - 1 and 0 <= c.pos[1] <= width - 1]
            else:
                for c in cells:
                    parents[c.label] = 0
            frames.append([self._state(c, c.intensity) for c in cells])
            contours.append({c.label: c.radii.copy() for c in cells})
        present = {c.label for cells in frames for c in cells}
        parents = {label: p for label, p in parents.items() if p and label in present}
        return MaskVideo(shape, self.crop_size, frames, parents), contours

    def sample(self, n_frames: int, shape: tuple[int, int] | None, rng: np.random.Generator,
               progress: bool = False) -> MaskVideo:
        """Simulate ``n_frames`` frames of size ``shape`` (default: the training frame size)."""
        return self.sample_with_contours(n_frames, shape, rng, progress)[0]

    # ------------------------------------------------------------------ helpers
    def _set_stage(self, cell: _Cell, t: int, rng: np.random.Generator) -> None:
        """AR(1) step of the shape coefficients; on a stage change, re-express the shape in the new model."""
        stage = self._stage_at(cell, t)
        if stage != cell.stage:
            new = self.shapes[stage]
            projected = np.clip(new.coefficients(cell.radii), -2.5, 2.5)
            g = self.config.stage_blend
            cell.b = g * projected + math.sqrt(1 - g * g) * rng.standard_normal(new.n_modes)
            cell.stage = stage
        elif t > 0:
            rho = self._rho(stage, len(cell.b))
            cell.b = rho * cell.b + np.sqrt(1 - rho**2) * rng.standard_normal(len(cell.b))
        cell.b = np.clip(cell.b, -3.0, 3.0)
        cell.radii = self._radii(cell)

    def _divide(self, mother: _Cell, t: int, next_label: int, rng: np.random.Generator) -> list[_Cell]:
        """Two daughters (stage 2) either side of the mother along her major axis."""
        s = self.scene
        sep = max(s.daughter_separation + s.daughter_separation_std * rng.standard_normal(), 2.0)
        axis = mother.angle + rng.normal(0, 0.2)
        direction = np.array([math.cos(axis), -math.sin(axis)])  # canonical major axis in the frame
        daughters = []
        for k, sign in enumerate((-1.0, 1.0)):
            pos = mother.pos + sign * 0.5 * sep * direction
            cell = self._new_cell(next_label + k, mother.label, pos, t, rng, 2, self._cycle(rng), mother.intensity,
                                  angle=mother.angle + rng.normal(0, 0.2), vel=mother.vel)
            cell.stage = self._stage_at(cell, t)
            cell.b = np.clip(rng.standard_normal(self.shapes[cell.stage].n_modes), -2.5, 2.5)
            cell.radii = self._radii(cell)
            daughters.append(cell)
        return daughters

    def _entering_cell(self, label: int, t: int, shape: tuple[int, int], rng: np.random.Generator) -> _Cell:
        """A root cell appearing just inside a random point of the frame border."""
        height, width = shape
        inset = float(np.mean(self.shapes[0].mean)) * 0.5
        perimeter = 2 * (height + width)
        p = rng.uniform(0, perimeter)
        if p < width:
            pos = (inset, p)
        elif p < width + height:
            pos = (p - width, width - 1 - inset)
        elif p < 2 * width + height:
            pos = (height - 1 - inset, p - width - height)
        else:
            pos = (p - 2 * width - height, inset)
        pos = np.clip(np.array(pos, float), 0, [height - 1, width - 1])
        cycle = self._cycle(rng)
        remaining = None if cycle is None else int(math.ceil(rng.uniform(0.0, 1.0) * cycle))
        intensity = self._gain(rng)
        cell = self._new_cell(label, 0, pos, t, rng, 0, remaining, intensity)
        self._set_stage(cell, t, rng)
        return cell


def _directional_radius(radii: np.ndarray, angles: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Contour radius of each cell (rows of ``radii``, pose ``angles``) along frame directions ``unit`` (N, 2)."""
    c, s = np.cos(angles), np.sin(angles)
    u = c * unit[:, 0] - s * unit[:, 1]
    v = s * unit[:, 0] + c * unit[:, 1]
    position = (np.arctan2(v, u) - RAY_ANGLES[0]) / (RAY_ANGLES[1] - RAY_ANGLES[0])
    k0 = np.floor(position).astype(int) % len(RAY_ANGLES)
    k1 = (k0 + 1) % len(RAY_ANGLES)
    w = position - np.floor(position)
    rows = np.arange(len(radii))
    return (1 - w) * radii[rows, k0] + w * radii[rows, k1]


def rng_free_push(i: int, j: int) -> np.ndarray:
    """Deterministic push for coincident centres (direction from the pair's indices)."""
    a = 2.399963 * (i * 31 + j)  # golden angle spreads directions
    return np.array([math.cos(a), math.sin(a)])


__all__ = ["RAY_ANGLES", "CellObservation", "MaskVideoConfig", "MaskVideoModel", "observe_cells"]
