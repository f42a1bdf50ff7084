"""Deterministic synthetic stand-in for the DeepFakeFace (DFF) dataset, as a simulation study.

DFF pairs real celebrity photos (``wiki``) with three families of generated fakes (``text2img``,
``inpainting``, ``insight``) that share the real image's file name. This module draws cartoon-like but
textured faces with Pillow and numpy (small heads, so that a face crop magnifies the face about 2x), and
plants in the fakes artefacts whose effect on each study question is known by construction
(docs/demo.md; ``demo.planted_effects`` in conf/demo checks them against the study's results):

======================  ==========================================  =====================================
Planted effect          Artefact (at the 128 px fake size)          What the study should find
======================  ==========================================  =====================================
learnable sources       coarse colour stripes in the background     phase 1 (16 px): both models AUC
                        (period 38 px; diffusion diagonal, in 92%   >= 0.90
                        of its fakes; face swap vertical, 80%)
source-specific         insight's stripes and face seam are its     hold-out Δ: insight flagged (> 0.05,
                        own; text2img and inpainting share the      Holm p < 0.05); inpainting small
                        diffusion stripes and grid                  (text2img teaches its family's cue)
resolution              diffusion upsampler grid, period 10.5 px    gain 16 -> 32 px (the 8% of diffusion
                        (2.6 px at 32; past Nyquist at 16, where    fakes without stripes)
                        the antialiased resize keeps about 5%)
face-local              every generator's fine blending texture     face crops gain for ResNet-18
                        (period 7 px, its own orientation per       (adopted by choose_preprocessing):
                        family) on the band around the face         insight, whose stripes are missing
                        (radius 0.95-1.35 of the face ellipse):     in 20% of its fakes, is told apart
                        about 1.75 px in the 32 px frame (mostly    in the crop by its texture
                        removed), about 5 px in the demo's tight
                        32 px face crop (margin 0.3)
null effects            nothing depends on colour statistics or     real-only normalisation and
                        on augmentation                             augmentation not adopted
data scaling            per-image cue amplitudes vary               phase 4: AUC rises with the data
                                                                    fraction
======================  ==========================================  =====================================

No cue changes an image's overall colour or brightness (it would show at every size). Background
artefacts stop short of the face and the blending texture avoids the eyes, nose and mouth; with a lit
highlight on every face and beards drawn as stubble (v5), MTCNN finds over 98% of the faces, real and
fake. Fakes are written with full chroma resolution (JPEG 4:4:4), as generators that write their own JPEGs
do, so the seam's colour texture survives the encoding.
"""

from __future__ import annotations

import io
import json
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

GENERATOR_VERSION = 5
GENERATOR_MARKER = ".generator.json"
"""A generated tree's record of the generator version and arguments that made it."""

logger = logging.getLogger(__name__)
"""Bumped whenever the images change for the same arguments; a demo tree made by another version is regenerated."""

DEFAULT_SOURCES: dict[str, str] = {
    "wiki": "real",
    "text2img": "fake",
    "inpainting": "fake",
    "insight": "fake",
}
"""Default folder -> label mapping, mirroring DFF's layout."""

ARTEFACT_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "inpainting": (0.25, 0.74, 0.75, 0.95),
    "insight": (0.39, 0.33, 0.61, 0.61),
}
"""Box (x0, y0, x1, y1), in fractions of the fake image, holding each localised artefact."""

COARSE_PERIOD = 0.3
COARSE_AMPLITUDE = (20.0, 45.0)
COARSE_PRESENCE = {"diffusion": 0.92, "face_swap": 0.8}
DIFFUSION_COLOUR = np.array([1.0, -1.0, 0.5])
SWAP_COLOUR = np.array([-0.5, 0.5, -1.0])
FINE_PERIOD = 10.5 / 128
FINE_AMPLITUDE = (25.0, 35.0)
FACE_PERIOD = 7 / 128
FACE_TEXTURE_AMPLITUDE = (45.0, 60.0)
SEAM_INNER_RADIUS = 0.95
SEAM_OUTER_RADIUS = 1.35
FACE_TEXTURE_COLOUR = np.array([1.0, -0.51, 0.0])

FACE_HIGHLIGHT = 35.0
"""Grey levels the lit centre of the face gains over its rim (see ``_draw_head``)."""
_SUPERSAMPLE = 4
_HEAD_CY = 0.46
_Array = npt.NDArray[np.float64]

_SKIN_RAMP = np.array(
    [[247, 215, 190], [225, 180, 145], [190, 140, 100], [140, 95, 65], [95, 62, 45]],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [
        [28, 24, 22],
        [62, 40, 28],
        [105, 70, 42],
        [190, 155, 95],
        [150, 148, 142],
        [135, 60, 32],
        [215, 212, 205],
    ],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.3, 0.25, 0.15, 0.1, 0.1, 0.05, 0.05])
_IRIS_COLOURS = np.array(
    [[70, 45, 25], [40, 28, 20], [70, 110, 160], [80, 120, 80], [110, 115, 120]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class _Face:
    """Identity-level appearance parameters, shared by the real image and its fakes.

    ``hair_style`` is 0 (bald), 1 (short), 2 (long) or 3 (voluminous); ``offset``
    is the identity's head (dx, dy, scale) displacement in fractions of the
    shorter image side.
    """

    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    clothes: tuple[float, float, float]
    head_rx: float
    head_ratio: float
    eye_dx: float
    eye_size: float
    nose_len: float
    mouth_w: float
    smile: float
    beard: bool
    glasses: bool
    light: tuple[float, float]
    offset: tuple[float, float, float]


def _rgb(values: _Array) -> tuple[float, float, float]:
    """Clip a colour to [0, 255] and return it as a float triple."""
    clipped = np.clip(values, 0, 255)
    return (float(clipped[0]), float(clipped[1]), float(clipped[2]))


def _sample_face(rng: np.random.Generator) -> _Face:
    """Sample one identity's appearance.

    Args:
        rng: Generator dedicated to this identity.

    Returns:
        The identity's face parameters.
    """
    tone = rng.uniform(0, len(_SKIN_RAMP) - 1)
    lo = int(np.floor(tone))
    hi = min(lo + 1, len(_SKIN_RAMP) - 1)
    skin = _SKIN_RAMP[lo] + (tone - lo) * (_SKIN_RAMP[hi] - _SKIN_RAMP[lo]) + rng.normal(0, 6, 3)
    grey = rng.uniform(60, 210)
    bg_top = grey + rng.normal(0, 35, 3)
    bg_bottom = bg_top * rng.uniform(0.6, 1.1) + rng.normal(0, 20, 3)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)] + rng.normal(0, 8, 3)
    lips = skin * np.array([0.86, 0.58, 0.58]) + np.array([25.0, 0.0, 5.0]) + rng.normal(0, 5, 3)
    return _Face(
        bg_top=_rgb(bg_top),
        bg_bottom=_rgb(bg_bottom),
        skin=_rgb(skin),
        hair=_rgb(hair),
        hair_style=int(rng.choice(4, p=[0.15, 0.45, 0.3, 0.1])),
        iris=_rgb(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 8, 3)),
        lips=_rgb(lips),
        clothes=_rgb(rng.uniform(20, 230, 3)),
        head_rx=float(rng.uniform(0.12, 0.145)),
        head_ratio=float(rng.uniform(1.22, 1.38)),
        eye_dx=float(rng.uniform(0.36, 0.44)),
        eye_size=float(rng.uniform(0.85, 1.15)),
        nose_len=float(rng.uniform(0.2, 0.3)),
        mouth_w=float(rng.uniform(0.3, 0.42)),
        smile=float(rng.uniform(-0.2, 1.0)),
        beard=bool(rng.random() < 0.15),
        glasses=bool(rng.random() < 0.15),
        light=(float(rng.uniform(-0.35, 0.35)), float(rng.uniform(-0.25, 0.1))),
        offset=(float(rng.normal(0, 0.015)), float(rng.normal(0, 0.015)), float(rng.normal(0, 0.04))),
    )


def _ink(colour: tuple[float, float, float], scale: float = 1.0) -> tuple[int, int, int]:
    """Convert a float colour, optionally scaled, to a Pillow fill tuple."""
    r, g, b = (int(np.clip(c * scale, 0, 255)) for c in colour)
    return (r, g, b)


def _draw_face(face: _Face, width: int, height: int, dx: float, dy: float, ds: float) -> Image.Image:
    """Draw the flat-shaded face with supersampling and return it at the target size.

    Args:
        face: Identity parameters.
        width: Output width in pixels.
        height: Output height in pixels.
        dx: Horizontal head offset, in fractions of the shorter side.
        dy: Vertical head offset, in fractions of the shorter side.
        ds: Relative head scale change.

    Returns:
        RGB image of size ``(width, height)``.
    """
    ss_w, ss_h = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    u = min(ss_w, ss_h)
    ramp = np.linspace(0.0, 1.0, ss_h)[:, None, None]
    column = ((1 - ramp) * np.array(face.bg_top) + ramp * np.array(face.bg_bottom)).astype(np.uint8)
    img = Image.fromarray(column, "RGB").resize((ss_w, ss_h), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)

    cx = ss_w / 2 + dx * u
    cy = ss_h / 2 + (dy + _HEAD_CY - 0.5) * u
    rx = face.head_rx * (1 + ds) * u
    ry = rx * face.head_ratio
    _draw_head(draw, face, cx, cy, rx, ry)
    eye_y = cy - 0.1 * ry
    _draw_eyes(draw, face, cx, eye_y, rx)
    _draw_nose_and_mouth(draw, face, cx, cy, eye_y, rx, ry)
    return img.reduce(_SUPERSAMPLE)


def _ellipse(draw: ImageDraw.ImageDraw, x: float, y: float, ax: float, ay: float, fill: tuple[int, int, int]) -> None:
    draw.ellipse((x - ax, y - ay, x + ax, y + ay), fill=fill)


def _draw_head(draw: ImageDraw.ImageDraw, face: _Face, cx: float, cy: float, rx: float, ry: float) -> None:
    """Shoulders, hair behind, neck, ears, the head, beard and hair in front, back to front."""
    _ellipse(draw, cx, cy + 1.55 * ry, 2.0 * rx, 0.75 * ry, _ink(face.clothes))
    if face.hair_style == 2:
        draw.rectangle((cx - 1.2 * rx, cy - 0.2 * ry, cx + 1.2 * rx, cy + 1.05 * ry), fill=_ink(face.hair))
        _ellipse(draw, cx, cy - 0.2 * ry, 1.2 * rx, 1.0 * ry, _ink(face.hair))
    draw.rectangle((cx - 0.42 * rx, cy + 0.5 * ry, cx + 0.42 * rx, cy + 1.1 * ry), fill=_ink(face.skin, 0.85))
    for side in (-1, 1):
        _ellipse(draw, cx + side * 0.98 * rx, cy + 0.02 * ry, 0.16 * rx, 0.22 * ry, _ink(face.skin, 0.93))
    if face.hair_style in (1, 3):
        _ellipse(draw, cx, cy - 0.12 * ry, 1.08 * rx, 1.0 * ry, _ink(face.hair, 0.92))
    # Concentric shading rounds the flat head, as a face detector expects of a lit face. The additive part is a
    # highlight: without it, dark skin gave MTCNN too little contrast and it missed 1 in 4 of those faces.
    for step in range(6):
        shrink = 1.0 - 0.1 * step
        lit = np.array(face.skin) * (0.8 + 0.04 * step) + FACE_HIGHLIGHT * step / 5
        _ellipse(draw, cx, cy + 0.04 * step * ry, rx * shrink, ry * shrink, _ink(_rgb(lit)))
    if face.beard:
        # Stubble on the jaw, half hair, half skin: a solid beard over the lower face hid it from MTCNN.
        stubble = 0.55 * np.array(face.hair) + 0.45 * np.array(face.skin)
        draw.chord((cx - rx, cy - 0.2 * ry, cx + rx, cy + ry), 30, 150, fill=_ink(_rgb(stubble), 0.9))
    if face.hair_style in (1, 2, 3):
        top = 1.12 if face.hair_style != 3 else 1.22
        line = 0.42 if face.hair_style != 3 else 0.3
        draw.chord(
            (cx - 1.05 * rx, cy - top * ry, cx + 1.05 * rx, cy + (2 * -line + top) * ry),
            180,
            360,
            fill=_ink(face.hair),
        )


def _draw_eyes(draw: ImageDraw.ImageDraw, face: _Face, cx: float, eye_y: float, rx: float) -> None:
    """Brows, eyes (white, iris, pupil, highlight, lid) and glasses."""
    ew, eh = 0.24 * rx * face.eye_size, 0.11 * rx * face.eye_size
    for side in (-1, 1):
        ex = cx + side * face.eye_dx * rx
        # A shaded eye socket gives the face detector the dark-eyes / light-cheeks pattern it looks for.
        _ellipse(draw, ex, eye_y - 0.3 * eh, 1.5 * ew, 2.2 * eh, _ink(face.skin, 0.78))
        brow = eye_y - 2.6 * eh
        draw.line(
            (ex - 1.1 * ew, brow + 0.5 * eh, ex, brow - 0.3 * eh, ex + 1.1 * ew, brow + 0.4 * eh),
            fill=_ink(face.hair, 0.6),
            width=max(1, int(0.07 * rx)),
        )
        _ellipse(draw, ex, eye_y, ew, eh, (240, 236, 230))
        _ellipse(draw, ex, eye_y, 0.55 * eh * 1.6, 0.95 * eh, _ink(face.iris))
        _ellipse(draw, ex, eye_y, 0.4 * eh, 0.4 * eh, (15, 12, 12))
        _ellipse(draw, ex + 0.25 * eh, eye_y - 0.3 * eh, 0.15 * eh, 0.15 * eh, (250, 250, 250))
        lid = (ex - ew, eye_y - eh, ex + ew, eye_y + eh)
        draw.arc(lid, 180, 360, fill=(40, 30, 28), width=max(1, int(0.03 * rx)))
        if face.glasses:
            draw.ellipse(
                (ex - 1.6 * ew, eye_y - 2.2 * eh, ex + 1.6 * ew, eye_y + 2.2 * eh),
                outline=(25, 25, 30),
                width=max(1, int(0.04 * rx)),
            )
    if face.glasses:
        draw.line((cx - 0.5 * ew, eye_y, cx + 0.5 * ew, eye_y), fill=(25, 25, 30), width=max(1, int(0.04 * rx)))


def _draw_nose_and_mouth(
    draw: ImageDraw.ImageDraw, face: _Face, cx: float, cy: float, eye_y: float, rx: float, ry: float
) -> None:
    """The nose's bridge and tip, then the lips and the line between them."""
    nose_top, nose_tip = eye_y + 0.1 * ry, eye_y + (0.1 + face.nose_len) * ry
    shade = _ink(face.skin, 0.55)
    for side in (-1, 1):
        _ellipse(draw, cx + side * 0.08 * rx, nose_tip, 0.05 * rx, 0.03 * ry, _ink(face.skin, 0.45))
    draw.line((cx - 0.02 * rx, nose_top, cx - 0.1 * rx, nose_tip), fill=shade, width=max(1, int(0.035 * rx)))
    draw.arc(
        (cx - 0.17 * rx, nose_tip - 0.06 * ry, cx + 0.17 * rx, nose_tip + 0.06 * ry),
        0,
        180,
        fill=shade,
        width=max(1, int(0.035 * rx)),
    )

    mouth_y = cy + 0.52 * ry
    mw = face.mouth_w * rx
    curve = face.smile * 0.05 * ry
    draw.chord((cx - mw, mouth_y - 0.07 * ry, cx + mw, mouth_y + 0.07 * ry + curve), 0, 180, fill=_ink(face.lips))
    draw.chord((cx - mw, mouth_y - 0.06 * ry, cx + mw, mouth_y + 0.03 * ry), 180, 360, fill=_ink(face.lips, 0.9))
    lip_line = (cx - mw, mouth_y, cx, mouth_y + 0.3 * curve, cx + mw, mouth_y)
    draw.line(lip_line, fill=_ink(face.lips, 0.55), width=max(1, int(0.03 * rx)))


def _texture(img: Image.Image, face: _Face, rng: np.random.Generator, noise: float) -> _Array:
    """Add directional lighting, low-frequency mottling and sensor noise.

    Args:
        img: Flat-shaded face.
        face: Identity parameters (for the light direction).
        rng: Generator for this image.
        noise: Standard deviation of the per-pixel noise, in grey levels.

    Returns:
        Float array ``(H, W, 3)`` in grey levels, not yet clipped.
    """
    arr = np.asarray(img, dtype=np.float64)
    h, w = arr.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    gx, gy = face.light
    lighting = 1 + gx * (xs / w - 0.5) + gy * (ys / h - 0.5)
    coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
    mottle = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    arr = arr * lighting[..., None] + 5.0 * mottle[..., None]
    return arr + rng.normal(0, noise, arr.shape) + rng.normal(0, noise / 2, (h, w, 1))


def _render(face: _Face, width: int, height: int, rng: np.random.Generator) -> _Array:
    """Render one textured photo of an identity with a small per-image pose jitter.

    Reals and fakes share this jitter distribution so that head placement alone
    does not give the label away.

    Args:
        face: Identity parameters.
        width: Output width in pixels.
        height: Output height in pixels.
        rng: Generator for this image.

    Returns:
        Float array ``(height, width, 3)`` in grey levels, not yet clipped.
    """
    dx, dy, ds = np.array(face.offset) + rng.normal(0, 0.008, 3) * np.array([1.0, 1.0, 2.0])
    img = _draw_face(face, width, height, float(dx), float(dy), float(ds))
    return _texture(img, face, rng, noise=rng.uniform(2.5, 5.0))


def _to_image(arr: _Array) -> Image.Image:
    """Clip and quantise a float array to an RGB image."""
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _blur(arr: _Array, radius: float) -> _Array:
    """Gaussian-blur a float image array through Pillow."""
    return np.asarray(_to_image(arr).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)


def _box_px(source: str, size: int) -> tuple[int, int, int, int]:
    """Return a source's artefact box in pixels of a square image."""
    x0, y0, x1, y1 = ARTEFACT_REGIONS[source]
    return (round(x0 * size), round(y0 * size), round(x1 * size), round(y1 * size))


def _grating(size: int, period: float, angle: float, phase: float) -> _Array:
    """A unit-amplitude cosine grating of ``period`` pixels at ``angle`` radians, ``(size, size, 1)``."""
    ys, xs = np.mgrid[0:size, 0:size]
    along = xs * np.cos(angle) + ys * np.sin(angle)
    return np.cos(2 * np.pi * along / period + phase)[..., None]


def _face_masks(size: int) -> tuple[_Array, _Array]:
    """Soft masks ``(size, size, 1)`` of the blending band around the face and of the background beyond it.

    The face box is ``ARTEFACT_REGIONS["insight"]``. The band runs from the face's edge (radius
    ``SEAM_INNER_RADIUS`` of the face ellipse) into the hair and background around it (``SEAM_OUTER_RADIUS``),
    clear of the eyes, nose and mouth that a face detector needs; the background mask leaves a margin around
    the face, so background artefacts never touch them either.
    """
    x0, y0, x1, y1 = _box_px("insight", size)
    ys, xs = np.mgrid[0:size, 0:size]
    rad = np.sqrt(((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((ys - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2)
    band = np.clip((SEAM_OUTER_RADIUS - rad) / 0.1 + 0.5, 0, 1) * np.clip((rad - SEAM_INNER_RADIUS) / 0.1 + 0.5, 0, 1)
    outside = np.clip((rad - 1.15) / 0.1 + 0.5, 0, 1)[..., None]
    return band[..., None], outside


def _background_stripes(arr: _Array, rng: np.random.Generator, family: str) -> _Array:
    """A family's coarse colour-stripe cue in the background, present in ``COARSE_PRESENCE[family]`` of its images."""
    angle, colour = (np.pi / 4, DIFFUSION_COLOUR) if family == "diffusion" else (0.0, SWAP_COLOUR)
    if rng.random() >= COARSE_PRESENCE[family]:
        return arr
    size = arr.shape[0]
    stripes = _grating(size, COARSE_PERIOD * size, angle, rng.uniform(0, 2 * np.pi))
    return arr + _face_masks(size)[1] * rng.uniform(*COARSE_AMPLITUDE) * stripes * colour


def _upsampler_grid(arr: _Array, rng: np.random.Generator, amplitude: float) -> _Array:
    """The diffusion family's fine cue: a background checkerboard grid that a smaller resize averages away."""
    size = arr.shape[0]
    period = FINE_PERIOD * size
    # A sum, not a product: a product of two gratings would move the energy to finer diagonal periods.
    phases = rng.uniform(0, 2 * np.pi, 2)
    grid = _grating(size, period, 0.0, phases[0]) + _grating(size, period, np.pi / 2, phases[1])
    return arr + _face_masks(size)[1] * amplitude * grid


def _text2img(arr: _Array, rng: np.random.Generator) -> _Array:
    """Diffusion stripes, the blending texture and a strong upsampler grid (no global colour change)."""
    out = _background_stripes(arr, rng, "diffusion")
    out = _face_texture(out, rng, np.pi / 4)
    return _upsampler_grid(out, rng, rng.uniform(*FINE_AMPLITUDE))


def _inpainting(arr: _Array, rng: np.random.Generator) -> _Array:
    """Diffusion stripes, a weaker upsampler grid, and a smoothed (noise-free) patch over the clothes.

    The patch changes no colour or brightness, so it shows only where the sensor noise is resolved: it tells
    inpainting from text2img (attribution) without adding a coarse cue at the small size.
    """
    size = arr.shape[0]
    out = _background_stripes(arr, rng, "diffusion")
    x0, y0, x1, y1 = (v + int(rng.integers(-1, 2)) for v in _box_px("inpainting", size))
    out[y0:y1, x0:x1] = _blur(out, 1.5 * size / 128)[y0:y1, x0:x1]
    low, high = FINE_AMPLITUDE
    out = _face_texture(out, rng, np.pi / 4)
    return _upsampler_grid(out, rng, rng.uniform(low, high) * 0.7)


def _insight(arr: _Array, rng: np.random.Generator) -> _Array:
    """A face swap: its own coarse background stripes and its own orientation of the blending texture."""
    out = _background_stripes(arr, rng, "face_swap")
    return _face_texture(out, rng, 3 * np.pi / 4)


def _face_texture(arr: _Array, rng: np.random.Generator, angle: float) -> _Array:
    """A fine blending texture on the band around the face, luminance-neutral (red against green).

    Too fine for the 32 px frame, resolved in a tight face crop: the demo's face-local cue. Every fake carries
    one (the diffusion family and the face swap at different orientations), so a crop model learns one
    feature from all fakes; insight gains most, as its coarse stripes are missing in 20% of its fakes.
    """
    size = arr.shape[0]
    band, _ = _face_masks(size)
    texture = _grating(size, FACE_PERIOD * size, angle, rng.uniform(0, 2 * np.pi))
    return arr + band * rng.uniform(*FACE_TEXTURE_AMPLITUDE) * texture * FACE_TEXTURE_COLOUR


_ARTEFACTS: dict[str, Callable[[_Array, np.random.Generator], _Array]] = {
    "text2img": _text2img,
    "inpainting": _inpainting,
    "insight": _insight,
}


def _generic_artefact(arr: _Array, rng: np.random.Generator) -> _Array:
    """Fallback artefact for unknown fake sources: smoothing plus a global colour cast."""
    return _blur(arr, 1.2 * arr.shape[0] / 96) + rng.normal(0, 1, 3) * 6 + np.array([8.0, 0.0, -8.0])


def _jpeg(arr: _Array, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Encode a float image array as baseline JPEG bytes (``subsampling``: the chroma resolution)."""
    buffer = io.BytesIO()
    _to_image(arr).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def _stream(name: str) -> int:
    """Stable per-source seed component (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def _real_size(rng: np.random.Generator, size_range: tuple[int, int]) -> tuple[int, int]:
    """Draw a real photo's (width, height): sometimes square, otherwise mildly rectangular."""
    lo, hi = size_range
    height = int(rng.integers(lo, hi + 1))
    aspect = 1.0 if rng.random() < 0.35 else rng.uniform(0.75, 1.3)
    width = int(np.clip(round(height * aspect), lo, hi))
    return width, height


def _validate(
    n_identities: int,
    sources: Mapping[str, str],
    n_subfolders: int,
    fake_size: int,
    real_size_range: tuple[int, int],
    real_quality_range: tuple[int, int],
    fake_quality: int,
) -> None:
    """Raise ``ValueError`` for arguments the generator cannot honour."""
    if n_identities < 1:
        raise ValueError(f"n_identities must be >= 1, got {n_identities}")
    if not 1 <= n_subfolders <= 100:
        raise ValueError(f"n_subfolders must be in [1, 100], got {n_subfolders}")
    bad = {name: label for name, label in sources.items() if label not in ("real", "fake")}
    if bad or not sources:
        raise ValueError(f"sources must map folder -> 'real' | 'fake', got {dict(sources)}")
    if any(not name or "/" in name for name in sources):
        raise ValueError(f"source folder names must be non-empty and flat, got {list(sources)}")
    if fake_size < 32:
        raise ValueError(f"fake_size must be >= 32, got {fake_size}")
    lo, hi = real_size_range
    if not 32 <= lo <= hi:
        raise ValueError(f"real_size_range must satisfy 32 <= lo <= hi, got {real_size_range}")
    q_lo, q_hi = real_quality_range
    if not 1 <= q_lo <= q_hi <= 100 or not 1 <= fake_quality <= 100:
        raise ValueError("JPEG qualities must lie in [1, 100] with lo <= hi")


def generate_demo_dataset(
    n_identities: int = 200,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
    n_subfolders: int = 4,
    fake_size: int = 128,
    real_size_range: tuple[int, int] = (96, 160),
    real_quality_range: tuple[int, int] = (70, 95),
    fake_quality: int = 90,
) -> dict[str, bytes]:
    """Generate a small synthetic dataset laid out like DeepFakeFace.

    Every identity gets one real image per ``"real"`` source and one fake per
    ``"fake"`` source, all sharing the file name ``<id>_<birth>_<year>.jpg`` and
    the two-digit subfolder, as in DFF. Reals vary in size, aspect and JPEG
    quality; fakes are square ``fake_size`` images at ``fake_quality``, each
    carrying its source's artefact (see ``ARTEFACT_REGIONS``; fake folders
    other than DFF's three get a generic smoothing and colour cast). The output is
    byte-identical for identical arguments, and the first ``k`` identities do
    not depend on ``n_identities``.

    Args:
        n_identities: Number of distinct people.
        seed: Seed for all randomness; no global random state is used.
        sources: Folder name -> ``"real"`` or ``"fake"``; defaults to DFF's four.
        n_subfolders: Number of two-digit subfolders (``00`` ...) per source.
        fake_size: Side of the square fake images in pixels.
        real_size_range: Inclusive bounds on the real images' width and height.
        real_quality_range: Inclusive bounds on the real images' JPEG quality.
        fake_quality: JPEG quality of the fake images.

    Returns:
        Mapping from relative path ``<source>/<NN>/<id>_<birth>_<year>.jpg`` to
        JPEG bytes, ordered by identity then source.

    Raises:
        ValueError: If an argument is out of range or a label is not real/fake.
    """
    sources = dict(DEFAULT_SOURCES if sources is None else sources)
    _validate(n_identities, sources, n_subfolders, fake_size, real_size_range, real_quality_range, fake_quality)
    names_rng = np.random.default_rng([seed, 0])
    used_ids: set[int] = set()
    files: dict[str, bytes] = {}
    for index in range(n_identities):
        person = int(names_rng.integers(100, 10_000_000))
        while person in used_ids:
            person = int(names_rng.integers(100, 10_000_000))
        used_ids.add(person)
        birth = int(names_rng.integers(1925, 1996))
        year = int(min(2015, birth + names_rng.integers(18, 70)))
        folder = f"{int(names_rng.integers(n_subfolders)):02d}"
        basename = f"{person}_{birth}_{year}.jpg"
        face = _sample_face(np.random.default_rng([seed, 1, index]))
        for source, label in sources.items():
            rng = np.random.default_rng([seed, 2, index, _stream(source)])
            if label == "real":
                files[f"{source}/{folder}/{basename}"] = _real_jpeg(face, rng, real_size_range, real_quality_range)
            else:
                files[f"{source}/{folder}/{basename}"] = _fake_jpeg(face, source, rng, fake_size, fake_quality)
    return files


def _real_jpeg(
    face: _Face, rng: np.random.Generator, size_range: tuple[int, int], quality_range: tuple[int, int]
) -> bytes:
    """A real image: random size and aspect, random JPEG quality."""
    width, height = _real_size(rng, size_range)
    arr = _render(face, width, height, rng)
    return _jpeg(arr, int(rng.integers(quality_range[0], quality_range[1] + 1)))


def _fake_jpeg(face: _Face, source: str, rng: np.random.Generator, size: int, quality: int) -> bytes:
    """A fake image: square, with its source's artefact, at the fakes' JPEG quality."""
    arr = _render(face, size, size, rng)
    # Full chroma resolution (4:4:4), as generators that write their own JPEGs do: 4:2:0 would halve the
    # face-swap texture's chroma and blur it away.
    return _jpeg(_ARTEFACTS.get(source, _generic_artefact)(arr, rng), quality, subsampling="4:4:4")


def ensure_generated_tree(root: Path, generator_args: Mapping[str, Any], what: str = "demo images") -> None:
    """Generates ``generate_demo_dataset(**generator_args)`` at ``root`` unless the tree there is that one.

    The tree records what made it (``GENERATOR_MARKER``: version and arguments); a tree whose record names
    another version or other arguments is regenerated (written beside the old one, then swapped in), so an old
    generated tree never silently stays. A tree with files but no record was not made by the generator (a
    user's own images): it is used as it is, never overwritten.
    """
    from deepfake_kedro.data_index import write_tree

    root = Path(root)
    wanted = json.loads(json.dumps({"generator_version": GENERATOR_VERSION, "generator_args": dict(generator_args)}))
    try:
        recorded = json.loads((root / GENERATOR_MARKER).read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == wanted:
        return
    if recorded is None and root.is_dir() and any(root.iterdir()):
        logger.warning("%s holds images but no %s: used as they are (delete the folder to generate the %s "
                       "there)", root, GENERATOR_MARKER, what)
        return
    if recorded is not None:
        logger.warning("The %s in %s were made by another generator version or other arguments; regenerating "
                       "them", what, root)
    else:
        logger.info("Generating the %s under %s", what, root)
    files = generate_demo_dataset(**generator_args)
    write_tree(root, [*files.items(), (GENERATOR_MARKER, json.dumps(wanted, indent=2).encode("utf-8"))])
