"""A procedural vehicle world: make/model shapes, identities, cameras and a 2-D renderer.

Everything is drawn with Pillow polygons at twice the target size and box-filtered down, and
the part mask is drawn with the very same primitives, so image and mask always agree. All
randomness comes from the ``numpy.random.Generator`` passed in, so a seed fixes every pixel.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# VeRi-776's class lists, in the order of its list_color.txt / list_type.txt (ids are 1-based there).
VERI_COLORS: tuple[str, ...] = (
    "yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black",
)  # fmt: skip
VERI_TYPES: tuple[str, ...] = (
    "sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate",
)  # fmt: skip
PART_CLASSES: tuple[str, ...] = (
    "background",
    "body",
    "window",
    "wheel",
    "light",
    "plate",
)
VIEWPOINTS: tuple[str, ...] = (
    "front",
    "rear",
    "side",
    "front_three_quarter",
    "rear_three_quarter",
)
VIEWPOINT_WORDS = {
    "front": "from the front",
    "rear": "from behind",
    "side": "from the side",
    "front_three_quarter": "from the front left",
    "rear_three_quarter": "from the rear left",
}

BODY, WINDOW, WHEEL, LIGHT, PLATE = 1, 2, 3, 4, 5

COLOR_RGB = np.array(
    [
        (222, 196, 38), (232, 122, 28), (38, 132, 62), (132, 134, 138), (196, 30, 34),
        (32, 66, 170), (232, 232, 228), (196, 160, 84), (112, 70, 38), (28, 28, 32),
    ],
    dtype=np.float32,
)  # fmt: skip
GLASS = (58, 72, 92)
TYRE = (22, 22, 24)
PLATE_CHARS = string.ascii_uppercase.replace("I", "").replace("O", "") + string.digits
# How far a make/model's proportions stray from its type's silhouette (±30%): at 64 px a
# vehicle is 35-60 px long, and models of one type must differ by a few pixels to be told apart
MODEL_SPREAD = 0.3
SUPERSAMPLE = 2  # polygons are drawn at this multiple of the target size, then box-filtered

# Base silhouettes per type, in units of the vehicle length: beltline, roof, nose height, hood run,
# windscreen run, rear-glass run, trunk (or load bed) run, width (front view), wheel radius.
_TYPE_SHAPES = {
    "sedan": dict(belt=0.20, roof=0.33, nose=0.15, hood=0.27, screen=0.13, rear=0.12, trunk=0.18, width=0.42, wheel=0.075),
    "suv": dict(belt=0.27, roof=0.43, nose=0.22, hood=0.22, screen=0.10, rear=0.04, trunk=0.02, width=0.44, wheel=0.09),
    "van": dict(belt=0.30, roof=0.52, nose=0.24, hood=0.10, screen=0.10, rear=0.01, trunk=0.0, width=0.42, wheel=0.08),
    "hatchback": dict(belt=0.24, roof=0.40, nose=0.17, hood=0.24, screen=0.13, rear=0.08, trunk=0.02, width=0.47, wheel=0.085),
    "mpv": dict(belt=0.26, roof=0.45, nose=0.19, hood=0.16, screen=0.17, rear=0.04, trunk=0.01, width=0.42, wheel=0.08),
    "pickup": dict(belt=0.26, roof=0.42, nose=0.22, hood=0.24, screen=0.10, rear=0.01, trunk=0.36, width=0.40, wheel=0.09),
    "bus": dict(belt=0.22, roof=0.40, nose=0.20, hood=0.01, screen=0.03, rear=0.01, trunk=0.0, width=0.28, wheel=0.055),
    "truck": dict(belt=0.28, roof=0.44, nose=0.24, hood=0.05, screen=0.06, rear=0.01, trunk=0.55, width=0.34, wheel=0.07),
    "estate": dict(belt=0.21, roof=0.35, nose=0.15, hood=0.26, screen=0.13, rear=0.05, trunk=0.03, width=0.40, wheel=0.075),
}  # fmt: skip


@dataclass(frozen=True)
class VehicleModel:
    """A make/model: a type's silhouette with its own proportions and face details."""

    index: int
    name: str
    type: int
    shape: tuple[tuple[str, float], ...]
    grille: int  # 0 bars, 1 mesh, 2 slot
    light_shape: int  # 0 wide, 1 round, 2 slanted
    side_windows: int

    def param(self, key: str) -> float:
        return dict(self.shape)[key]


@dataclass(frozen=True)
class Identity:
    """One vehicle: model and colour plus the small details that tell look-alikes apart."""

    vid: int
    model: int
    type: int
    color: int
    plate: str
    sticker: tuple[float, int] | None  # position along the windscreen (0..1), colour index
    roof_rack: bool
    rim_style: int  # 0 plain, 1 spoked, 2 light alloy, 3 dark
    antenna: bool
    stripe: bool


@dataclass(frozen=True)
class Camera:
    """A fixed camera: where it looks from, its light, optics and scene."""

    index: int
    view_probs: tuple[float, ...]
    gain: tuple[float, float, float]
    brightness: float
    blur: float
    scale: tuple[float, float]
    occlusion: float
    road: tuple[int, int, int]
    clutter_seed: int
    noise: float


@dataclass(frozen=True)
class Shot:
    """The framing of one exposure; a track of near-duplicate frames perturbs it slightly."""

    viewpoint: str
    scale: float
    dx: float
    ground: float
    mirror: bool
    exposure: float
    occluder_seed: int | None

    def jitter(self, rng: np.random.Generator) -> Shot:
        return replace(
            self,
            scale=self.scale * float(rng.uniform(0.97, 1.03)),
            dx=self.dx + float(rng.uniform(-0.015, 0.015)),
            exposure=self.exposure * float(rng.uniform(0.98, 1.02)),
        )


class SynthConfigError(ValueError):
    """A world, render or writer parameter that cannot produce a sensible dataset."""


@dataclass
class Render:
    """One picture: RGB image, its part mask (ids index ``PART_CLASSES``) and the viewpoint."""

    image: Image.Image
    mask: np.ndarray
    viewpoint: str


def _make_models(rng: np.random.Generator, n_models: int) -> list[VehicleModel]:
    """``n_models`` make/models spread evenly over the types, each a jittered type silhouette."""
    models = []
    for t, type_name in enumerate(VERI_TYPES):
        base = _TYPE_SHAPES[type_name]
        per_type = n_models // len(VERI_TYPES) + (t < n_models % len(VERI_TYPES))
        for m in range(per_type):
            jitter = {
                k: float(v * rng.uniform(1 - MODEL_SPREAD, 1 + MODEL_SPREAD))
                if v > 0.02
                else float(v)
                for k, v in base.items()
            }
            models.append(
                VehicleModel(
                    index=len(models),
                    name=f"{type_name}_{m + 1:02d}",
                    type=t,
                    shape=tuple(sorted(jitter.items())),
                    grille=int(rng.integers(3)),
                    light_shape=int((m + rng.integers(2)) % 3),
                    side_windows=int(rng.integers(2, 4)) if type_name != "bus" else 6,
                )
            )
    return models


def _make_cameras(rng: np.random.Generator, n: int) -> list[Camera]:
    cameras = []
    for c in range(n):
        probs = rng.dirichlet(np.full(len(VIEWPOINTS), 0.6)) + 0.02
        probs /= probs.sum()
        cameras.append(
            Camera(
                index=c,
                view_probs=tuple(float(p) for p in probs),
                gain=tuple(float(g) for g in rng.uniform(0.82, 1.15, 3)),
                brightness=float(rng.uniform(0.7, 1.2)),
                blur=float(rng.choice([0.0, 0.0, 0.3, 0.6, 0.9])),
                scale=(float(rng.uniform(0.55, 0.7)), float(rng.uniform(0.78, 0.95))),
                occlusion=float(rng.choice([0.0, 0.0, 0.15, 0.35])),
                road=tuple(
                    int(v) for v in np.clip(rng.integers(75, 140) + rng.integers(-8, 9, 3), 0, 255)
                ),
                clutter_seed=int(rng.integers(2**31)),
                noise=float(rng.uniform(2.0, 7.0)),
            )
        )
    return cameras


class _Canvas:
    """Draws every primitive twice: colour at 2x supersampling and the part label."""

    def __init__(self, background: Image.Image):
        self.image = background.copy()
        self.mask = Image.new("L", background.size, 0)
        self.rgb = ImageDraw.Draw(self.image)
        self.lab = ImageDraw.Draw(self.mask)

    def poly(self, points, color, label: int | None) -> None:
        pts = [(float(x), float(y)) for x, y in points]
        self.rgb.polygon(pts, fill=tuple(int(c) for c in color))
        if label is not None:
            self.lab.polygon(pts, fill=label)

    def rect(self, x0, y0, x1, y1, color, label: int | None) -> None:
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        self.rgb.rectangle(box, fill=tuple(int(c) for c in color))
        if label is not None:
            self.lab.rectangle(box, fill=label)

    def ellipse(self, cx, cy, rx, ry, color, label: int | None) -> None:
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        self.rgb.ellipse(box, fill=tuple(int(c) for c in color))
        if label is not None:
            self.lab.ellipse(box, fill=label)

    def line(self, points, color, width: float, label: int | None) -> None:
        w = max(1, int(round(width)))
        self.rgb.line(points, fill=tuple(int(c) for c in color), width=w)
        if label is not None:
            self.lab.line(points, fill=label, width=w)


def _shade(color: np.ndarray, factor: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(color * factor, 0, 255))


# Pseudo-glyphs: each plate character is a fixed 3x5 bit pattern, so plates differ visibly.
@cache
def _glyph(ch: str) -> tuple[tuple[int, int], ...]:
    bits = np.random.default_rng(ord(ch) * 7919).random((5, 3)) < 0.55
    bits[:, 1] |= ch.isdigit()
    return tuple((int(r), int(c)) for r, c in zip(*np.nonzero(bits), strict=True))


class SynthWorld:
    """The world: its make/models and cameras are fixed by the seed."""

    def __init__(self, seed: int, n_cameras: int = 20, n_models: int = 36):
        if n_cameras < 1:
            raise SynthConfigError(f"n_cameras must be at least 1, got {n_cameras}")
        if n_models < len(VERI_TYPES):
            raise SynthConfigError(
                f"n_models must be at least {len(VERI_TYPES)} (one per type), got {n_models}"
            )
        rng = np.random.default_rng([seed, 1])
        self.seed = seed
        self.models = _make_models(rng, n_models)
        self.models_of_type = [
            [m.index for m in self.models if m.type == t] for t in range(len(VERI_TYPES))
        ]
        self.cameras = _make_cameras(rng, n_cameras)
        self._backgrounds: dict[tuple[int, int, int], Image.Image] = {}

    # ---- identities -------------------------------------------------------------------------
    def make_identity(self, vid: int, model: int, color: int, rng: np.random.Generator) -> Identity:
        """An identity of the given model and colour with freshly drawn plate and accessories."""
        plate = "".join(rng.choice(list(PLATE_CHARS), 6))
        sticker = (
            (float(rng.uniform(0.1, 0.9)), int(rng.integers(10))) if rng.random() < 0.5 else None
        )
        return Identity(
            vid=vid,
            model=model,
            type=self.models[model].type,
            color=color,
            plate=plate,
            sticker=sticker,
            roof_rack=bool(rng.random() < 0.25),
            rim_style=int(rng.integers(4)),
            antenna=bool(rng.random() < 0.3),
            stripe=bool(rng.random() < 0.15),
        )

    def sample_identities(
        self,
        n: int,
        rng: np.random.Generator,
        long_tail: bool = False,
        lookalike: float = 0.35,
    ) -> list[Identity]:
        """``n`` identities; a share ``lookalike`` repeats an earlier model and colour exactly.

        With ``long_tail`` the (colour, type) pair follows a Zipf law over a random ranking of
        all pairs, like real traffic where a few combinations dominate.
        """
        combos = [(c, t) for c in range(len(VERI_COLORS)) for t in range(len(VERI_TYPES))]
        if long_tail:
            order = rng.permutation(len(combos))
            weights = 1.0 / (np.arange(1, len(combos) + 1) ** 1.1)
            probs = np.empty(len(combos))
            probs[order] = weights / weights.sum()
        else:
            probs = np.full(len(combos), 1.0 / len(combos))
        identities: list[Identity] = []
        for vid in range(n):
            if identities and rng.random() < lookalike:
                twin = identities[int(rng.integers(len(identities)))]
                model, color = twin.model, twin.color
            else:
                color, type_ = combos[int(rng.choice(len(combos), p=probs))]
                candidates = self.models_of_type[type_]
                model = candidates[int(rng.integers(len(candidates)))]
            identities.append(self.make_identity(vid, model, color, rng))
        return identities

    def caption(self, identity: Identity, viewpoint: str) -> str:
        color, type_ = VERI_COLORS[identity.color], VERI_TYPES[identity.type]
        article = "an" if color[0] in "aeiou" else "a"
        return f"a photo of {article} {color} {type_} seen {VIEWPOINT_WORDS[viewpoint]}"

    def camera(self, camera_id: int) -> Camera:
        if not 0 <= camera_id < len(self.cameras):
            raise SynthConfigError(
                f"camera_id {camera_id} out of range: the world has {len(self.cameras)} cameras"
            )
        return self.cameras[camera_id]

    # ---- rendering --------------------------------------------------------------------------
    def _background(self, camera: Camera, w: int, h: int) -> Image.Image:
        key = (camera.index, w, h)
        if key not in self._backgrounds:
            rng = np.random.default_rng(camera.clutter_seed)
            img = Image.new("RGB", (w, h), camera.road)
            draw = ImageDraw.Draw(img)
            horizon = int(h * rng.uniform(0.15, 0.4))
            sky = tuple(int(v) for v in rng.integers(120, 220, 3))
            draw.rectangle((0, 0, w, horizon), fill=sky)
            for _ in range(int(rng.integers(3, 9))):  # buildings, trees, signs
                x0 = rng.uniform(-0.1, 1.0) * w
                bw, bh = (
                    rng.uniform(0.08, 0.35) * w,
                    rng.uniform(0.1, 0.6) * horizon + 2,
                )
                color = tuple(int(v) for v in rng.integers(40, 200, 3))
                draw.rectangle((x0, horizon - bh, x0 + bw, horizon), fill=color)
            kerb = int(h * rng.uniform(0.82, 0.95))
            draw.rectangle((0, kerb, w, h), fill=tuple(int(v * 0.8) for v in camera.road))
            for _ in range(int(rng.integers(1, 3))):  # lane marks
                y = horizon + (kerb - horizon) * rng.uniform(0.2, 0.9)
                for x in np.arange(rng.uniform(0, 0.1) * w, w, w * 0.22):
                    draw.rectangle((x, y, x + w * 0.1, y + max(1, h * 0.012)), fill=(225, 225, 210))
            self._backgrounds[key] = img
        return self._backgrounds[key]

    def sample_shot(
        self, camera_id: int, rng: np.random.Generator, viewpoint: str | None = None
    ) -> Shot:
        """Where the vehicle stands in the frame and how it is lit, for one exposure."""
        camera = self.camera(camera_id)
        if viewpoint is None:
            viewpoint = VIEWPOINTS[int(rng.choice(len(VIEWPOINTS), p=camera.view_probs))]
        elif viewpoint not in VIEWPOINTS:
            raise SynthConfigError(f"unknown viewpoint {viewpoint!r}; expected one of {VIEWPOINTS}")
        return Shot(
            viewpoint=viewpoint,
            scale=float(rng.uniform(*camera.scale)),
            dx=float(rng.uniform(-0.06, 0.06)),
            ground=float(rng.uniform(0.86, 0.93)),
            mirror=bool(rng.random() < 0.5),
            exposure=float(rng.uniform(0.9, 1.1)),
            occluder_seed=int(rng.integers(2**31)) if rng.random() < camera.occlusion else None,
        )

    def render(
        self,
        identity: Identity,
        camera_id: int,
        rng: np.random.Generator,
        size: tuple[int, int] = (64, 64),
        viewpoint: str | None = None,
        shot: Shot | None = None,
    ) -> Render:
        """Render ``identity`` seen by camera ``camera_id``; ``size`` is (height, width).

        ``shot`` fixes the framing (for near-duplicate frames of one track); otherwise one is
        sampled from the camera's distributions.
        """
        camera = self.camera(camera_id)
        if shot is None:
            shot = self.sample_shot(camera_id, rng, viewpoint)
        h, w = _check_size(size)
        ss = SUPERSAMPLE
        canvas = _Canvas(self._background(camera, w * ss, h * ss))
        model = self.models[identity.model]
        color = COLOR_RGB[identity.color]
        span = shot.scale * min(w * ss, 2.2 * h * ss)  # vehicle extent in pixels
        cx = w * ss * (0.5 + shot.dx)
        ground = h * ss * shot.ground
        if shot.viewpoint == "side":
            _draw_side(canvas, model, identity, color, cx - span / 2, ground, span, shot.mirror)
        elif shot.viewpoint in ("front", "rear"):
            face_w = min(span * 0.6, ground * 0.85 * model.param("width") / model.param("roof"))
            _draw_face(
                canvas,
                model,
                identity,
                color,
                cx,
                ground,
                face_w,
                shot.viewpoint == "front",
            )
        else:
            _draw_three_quarter(
                canvas,
                model,
                identity,
                color,
                cx,
                ground,
                span,
                shot.viewpoint == "front_three_quarter",
            )
        if shot.occluder_seed is not None:
            _draw_occluder(canvas, np.random.default_rng(shot.occluder_seed))
        image = canvas.image.resize((w, h), Image.Resampling.BOX)
        mask = np.asarray(canvas.mask.resize((w, h), Image.Resampling.NEAREST))
        image = _apply_camera(image, camera, shot.exposure, rng)
        return Render(image=image, mask=mask, viewpoint=shot.viewpoint)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of at least 16 px each: below that a vehicle is a few blotches."""
    if len(size) != 2 or min(size) < 16:
        raise SynthConfigError(f"image size must be (height, width), each >= 16 px, got {size}")
    return int(size[0]), int(size[1])


def _draw_wheel(c: _Canvas, x: float, y: float, r: float, rim_style: int) -> None:
    c.ellipse(x, y, r, r, TYRE, WHEEL)
    rim = [(170, 172, 176), (200, 200, 205), (225, 225, 215), (60, 60, 66)][rim_style]
    c.ellipse(x, y, r * 0.55, r * 0.55, rim, WHEEL)
    if rim_style == 1:
        for a in np.linspace(0, np.pi, 3, endpoint=False):
            dx, dy = np.cos(a) * r * 0.5, np.sin(a) * r * 0.5
            c.line([(x - dx, y - dy), (x + dx, y + dy)], TYRE, max(1.0, r * 0.12), WHEEL)
    elif rim_style == 2:
        c.ellipse(x, y, r * 0.2, r * 0.2, TYRE, WHEEL)


Point = Callable[[float, float], tuple[float, float]]  # a drawing's (u, v) -> pixel (x, y)


def _quad(pt: Point, u0: float, v0: float, u1: float, v1: float) -> list[tuple[float, float]]:
    """A box in a drawing's (u, v) frame, corners in the order every part is drawn."""
    return [pt(u0, v0), pt(u1, v0), pt(u1, v1), pt(u0, v1)]


@dataclass(frozen=True)
class _SideShape:
    """A model's side profile in vehicle-length units: heights (``clear`` under the body,
    ``belt`` under the windows, ``roof``, ``nose``) and where the roof starts and ends."""

    type_name: str
    clear: float
    belt: float
    roof: float
    nose: float
    hood: float
    screen: float
    rear: float
    trunk: float
    roof_front: float
    roof_back: float

    @classmethod
    def of(cls, model: VehicleModel) -> _SideShape:
        p = model.param
        type_name = VERI_TYPES[model.type]
        hood, screen, rear, trunk = p("hood"), p("screen"), p("rear"), p("trunk")
        open_back = type_name in ("pickup", "truck")  # a cab: the roof ends just behind it
        return cls(
            type_name,
            p("wheel") * 0.7,
            p("belt"),
            p("roof"),
            p("nose"),
            hood,
            screen,
            rear,
            trunk,
            roof_front=1 - hood - screen,
            roof_back=trunk + 0.02 if open_back else trunk + rear,
        )


def _draw_side(c, model, ident, color, x0, ground, length, mirror, vscale=None):
    """Side profile facing right (left when ``mirror``): body, greenhouse, fittings, lights and
    wheels, in that order (later parts cover earlier ones)."""
    sy = length if vscale is None else vscale

    def pt(u: float, v: float) -> tuple[float, float]:
        x = x0 + (1 - u if mirror else u) * length
        return x, ground - v * sy

    shape = _SideShape.of(model)
    _side_body(c, pt, shape, ident, color)
    _side_greenhouse(c, pt, shape, model.side_windows, color)
    _side_fittings(c, pt, shape, ident, length, mirror)
    _side_lights(c, pt, shape)
    wheel = model.param("wheel")
    positions = (0.17, 0.83) if shape.type_name not in ("bus", "truck") else (0.12, 0.68, 0.86)
    for u in positions:
        x, y = pt(u, wheel * 0.95)
        _draw_wheel(c, x, y, wheel * sy, ident.rim_style)


def _side_body(c: _Canvas, pt: Point, s: _SideShape, ident: Identity, color) -> None:
    """The body's outline (a truck's cargo box above it), the sill and an optional stripe."""
    body = [
        pt(0, s.clear),
        pt(1, s.clear),
        pt(1, s.nose),
        pt(0.985, s.belt),
        pt(1 - s.hood, s.belt),
    ]
    body += [pt(s.roof_front, s.roof), pt(s.roof_back, s.roof), pt(s.trunk, s.belt), pt(0, s.belt)]
    c.poly(body, color, BODY)
    if s.type_name == "truck":  # the cargo box stands above the cab
        c.poly(_quad(pt, 0, s.clear, s.trunk - 0.01, s.roof * 1.18), (205, 205, 200), BODY)
    c.poly(_quad(pt, 0.02, s.clear, 0.98, s.clear + 0.025), _shade(color, 0.7), BODY)
    if ident.stripe:
        c.poly(_quad(pt, 0.03, s.belt * 0.72, 0.97, s.belt * 0.62), (240, 240, 240), BODY)


def _side_greenhouse(c: _Canvas, pt: Point, s: _SideShape, windows: int, color) -> None:
    """The side windows: one glass band split by ``windows - 1`` pillars."""
    inset = 0.012
    g0 = s.roof_back + inset + (0.0 if s.type_name in ("pickup", "truck") else s.rear * 0.2)
    g1 = s.roof_front + s.screen * 0.75
    top = s.roof - 0.025
    glass = [
        pt(max(s.trunk + inset, g0 - s.rear * 0.6), s.belt + 0.01),
        pt(g1 + s.screen * 0.2, s.belt + 0.01),
        pt(s.roof_front + 0.01, top),
        pt(g0, top),
    ]
    c.poly(glass, GLASS, WINDOW)
    for k in range(1, windows):
        u = g0 + (s.roof_front - g0) * k / windows
        c.poly(_quad(pt, u - 0.008, s.belt, u + 0.008, s.roof), color, BODY)


def _side_fittings(c, pt: Point, s: _SideShape, ident: Identity, length, mirror) -> None:
    """What an identity may carry on its roof: a rack (two feet and a bar), an antenna."""
    rack = (35, 35, 35)
    if ident.roof_rack:
        for u in (s.roof_back + 0.04, s.roof_front - 0.04):
            c.poly(_quad(pt, u - 0.008, s.roof, u + 0.008, s.roof + 0.03), rack, BODY)
        bar = _quad(pt, s.roof_back + 0.02, s.roof + 0.025, s.roof_front - 0.02, s.roof + 0.04)
        c.poly(bar, rack, BODY)
    if ident.antenna:
        x, y = pt(s.roof_back + 0.03, s.roof)
        tip = (x - (-1 if mirror else 1) * length * 0.03, y - length * 0.07)
        c.line([(x, y), tip], (20, 20, 20), max(1.0, length * 0.006), None)


def _side_lights(c: _Canvas, pt: Point, s: _SideShape) -> None:
    """The head light at the front end, the tail light at the rear end."""
    c.poly(_quad(pt, 0.975, s.nose - 0.01, 1.0, s.nose - 0.045), (245, 240, 200), LIGHT)
    c.poly(_quad(pt, 0.0, s.belt - 0.015, 0.02, s.belt - 0.05), (200, 25, 25), LIGHT)


def _draw_plate(c, cx, cy, pw, ph, plate: str) -> None:
    c.rect(
        cx - pw / 2,
        cy - ph / 2,
        cx + pw / 2,
        cy + ph / 2,
        (230, 230, 235) if plate[0] < "N" else (40, 80, 200),
        PLATE,
    )
    ink = (20, 20, 20) if plate[0] < "N" else (240, 240, 240)
    cw = pw / (len(plate) * 4 + 1)
    chh = ph * 0.7 / 5
    for k, ch in enumerate(plate):
        gx = cx - pw / 2 + cw * (1 + 4 * k)
        gy = cy - ph * 0.35
        for r, col in _glyph(ch):
            c.rect(
                gx + col * cw,
                gy + r * chh,
                gx + (col + 1) * cw,
                gy + (r + 1) * chh,
                ink,
                PLATE,
            )


def _draw_face(c, model, ident, color, cx, ground, face_w, front: bool, vscale=None):
    """Front or rear face centred at ``cx``; a ``vscale`` above the width's foreshortens it.
    Body, then lights (and the grille in front), then the plate and a rear antenna."""
    p = model.param
    scale = face_w / p("width") if vscale is None else vscale  # pixels per unit length, vertically

    def pt(u: float, v: float) -> tuple[float, float]:
        # u in [-0.5, 0.5] across the width, v height in vehicle-length units
        return cx + u * face_w, ground - v * scale

    clear, belt, roof = p("wheel") * 0.7, p("belt"), p("roof")
    type_name = VERI_TYPES[model.type]
    if type_name == "truck" and not front:
        roof = roof * 1.18
    _face_body(c, pt, ident, color, type_name, clear, belt, roof)
    if front:
        _face_grille(c, pt, model.grille, clear, belt, scale)
    _face_lights(c, pt, model.light_shape, front, belt, face_w, scale)
    px, py = pt(0.0, clear + 0.045)
    _draw_plate(c, px, py, face_w * 0.3, face_w * 0.075, ident.plate)
    if ident.antenna and not front:
        x, y = pt(0.3, roof)
        c.line([(x, y), (x + 1, y - scale * 0.06)], (20, 20, 20), max(1.0, scale * 0.006), None)


def _face_body(c: _Canvas, pt: Point, ident: Identity, color, type_name, clear, belt, roof):
    """Wheels peeking out below, the body tapering to the roof, the glass with an optional
    sticker, a roof rack and the bumper band."""
    for u in (-0.42, 0.42):
        x0, y0 = pt(u - 0.07, clear + 0.01)
        x1, y1 = pt(u + 0.07, 0.0)
        c.rect(x0, y0, x1, y1, TYRE, WHEEL)
    taper = 0.12 if type_name not in ("bus", "van", "truck") else 0.03
    c.poly(_quad(pt, -0.5, clear, 0.5, belt), color, BODY)
    c.poly(
        [pt(-0.5, belt), pt(0.5, belt), pt(0.5 - taper, roof), pt(-0.5 + taper, roof)], color, BODY
    )
    glass_top = roof - 0.03
    glass = [pt(-0.44, belt + 0.015), pt(0.44, belt + 0.015)]
    c.poly(glass + [pt(0.44 - taper, glass_top), pt(-0.44 + taper, glass_top)], GLASS, WINDOW)
    if ident.sticker is not None:
        pos, sticker_color = ident.sticker
        u = -0.36 + 0.72 * pos
        x0, y0 = pt(u - 0.045, glass_top - 0.055)
        x1, y1 = pt(u + 0.045, glass_top - 0.012)
        c.rect(x0, y0, x1, y1, COLOR_RGB[sticker_color], WINDOW)
    if ident.roof_rack:
        c.poly(_quad(pt, -0.42, roof, 0.42, roof + 0.03), (35, 35, 35), BODY)
    c.poly(_quad(pt, -0.5, clear, 0.5, clear + 0.03), _shade(color, 0.65), BODY)


def _face_grille(c: _Canvas, pt: Point, grille: int, clear, belt, scale) -> None:
    """The front grille: a dark panel with 2 + 2 × ``grille`` bars."""
    gx0, gy0 = pt(-0.22, clear + 0.045)
    gx1, gy1 = pt(0.22, belt - 0.02)
    c.rect(gx0, gy0, gx1, gy1, (30, 30, 34), BODY)
    grille_lines = 3 + grille * 2
    for k in range(1, grille_lines):
        y = gy0 + (gy1 - gy0) * k / grille_lines
        c.line([(gx0, y), (gx1, y)], (120, 120, 125), max(1.0, scale * 0.004), None)


def _face_lights(c: _Canvas, pt: Point, light_shape: int, front: bool, belt, face_w, scale):
    """A pair of head (front) or tail (rear) lights: wide, round or slanted by the model."""
    light = (245, 242, 210) if front else (205, 28, 28)
    light_y0, light_y1 = belt - 0.06, belt - 0.015
    lw, slant = {0: (0.2, 0.0), 1: (0.1, 0.0), 2: (0.16, 0.02)}[light_shape]
    for side in (-1, 1):
        u_out = side * 0.47
        u_in = side * (0.47 - lw)
        if light_shape == 1:
            x, y = pt((u_out + u_in) / 2, (light_y0 + light_y1) / 2)
            rx, ry = abs(u_out - u_in) * face_w / 2, (light_y1 - light_y0) * scale / 2
            c.ellipse(x, y, rx, ry, light, LIGHT)
        else:
            outline = [pt(u_out, light_y0), pt(u_in, light_y0 + slant)]
            c.poly(outline + [pt(u_in, light_y1), pt(u_out, light_y1)], light, LIGHT)


def _draw_three_quarter(c, model, ident, color, cx, ground, span, front: bool) -> None:
    """A foreshortened side joined to a foreshortened face at the end that faces the camera.

    The oblique windscreen (or rear glass) fills the notch between the side's pillar and the
    face, and the roof edge runs across it, so the two halves read as one vehicle.
    """
    p = model.param
    vscale = min(span * 0.85, ground * 0.8 / p("roof"))
    side_len = vscale * 0.75
    face_w = p("width") * vscale * 0.75
    x0 = cx - (side_len + face_w) / 2
    # front: side on the left facing right, face on the right; rear: face left, side right of it
    join = x0 + side_len if front else x0 + face_w
    side_x0 = x0 if front else join
    face_cx = join + face_w / 2 if front else x0 + face_w / 2
    toward = 1 if front else -1  # direction from the side's pillar to the face

    def side_pt(u: float, v: float) -> tuple[float, float]:
        return side_x0 + u * side_len, ground - v * vscale

    def face_x(inset: float) -> float:
        return join + toward * inset * face_w

    belt, roof = p("belt"), p("roof")
    taper = 0.12 if VERI_TYPES[model.type] not in ("bus", "van", "truck") else 0.03
    if front:
        pillar, base = side_pt(1 - p("hood") - p("screen"), roof), side_pt(1 - p("hood"), belt)
    else:
        pillar, base = side_pt(p("trunk") + p("rear"), roof), side_pt(p("trunk"), belt)
    roof_y, belt_y = ground - roof * vscale, ground - belt * vscale
    open_bed = not front and VERI_TYPES[model.type] == "pickup"  # nothing to fill behind a cab
    if not open_bed:
        c.poly([pillar, (face_x(taper), roof_y), (join, belt_y), base], GLASS, WINDOW)
        edge = (face_x(taper), roof_y + 0.02 * vscale), (pillar[0], pillar[1] + 0.02 * vscale)
        c.poly([pillar, (face_x(taper), roof_y), *edge], color, BODY)
    _draw_side(c, model, ident, color, side_x0, ground, side_len, False, vscale)
    _draw_face(c, model, ident, color, face_cx, ground, face_w, front, vscale)


def _draw_occluder(c: _Canvas, rng: np.random.Generator) -> None:
    w, h = c.image.size
    if rng.random() < 0.5:  # a pole
        x = rng.uniform(0.05, 0.95) * w
        pw = rng.uniform(0.03, 0.07) * w
        c.rect(x, 0, x + pw, h, tuple(int(v) for v in rng.integers(40, 110, 3)), 0)
    else:  # the edge of another vehicle in the foreground
        side = rng.random() < 0.5
        ow = rng.uniform(0.12, 0.3) * w
        x0, x1 = (0, ow) if side else (w - ow, w)
        c.rect(
            x0,
            h * rng.uniform(0.35, 0.6),
            x1,
            h,
            tuple(int(v) for v in rng.integers(20, 230, 3)),
            0,
        )


def _apply_camera(
    image: Image.Image, camera: Camera, exposure: float, rng: np.random.Generator
) -> Image.Image:
    """Colour cast, exposure, sensor noise and optical blur of the camera."""
    arr = np.asarray(image, dtype=np.float32)
    gain = np.asarray(camera.gain, dtype=np.float32) * camera.brightness * exposure
    arr = arr * gain + rng.normal(0.0, camera.noise, arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if camera.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(camera.blur * out.size[0] / 64))
    return out
