"""Procedural textures (noise, gradients, stripes, bricks, random shapes) for backgrounds,
the ground and occluders. Everything is drawn from the ``numpy.random.Generator`` passed
in, so a seed fixes every pixel."""
from __future__ import annotations

import cv2
import numpy as np


def random_colour(rng: np.random.Generator, low: int = 20, high: int = 235) -> np.ndarray:
    """(3,) float BGR colour."""
    return rng.uniform(low, high, size=3)


def value_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 4,
                base_cells: int = 4, persistence: float = 0.55) -> np.ndarray:
    """Fractal value noise in [0, 1], (height, width) float32."""
    total = np.zeros((height, width), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = base_cells * 2 ** octave
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        norm += amplitude
        amplitude *= persistence
    total /= norm
    return np.clip((total - total.min()) / max(float(np.ptp(total)), 1e-6), 0.0, 1.0)


def _blend(weights: np.ndarray, colour_a: np.ndarray, colour_b: np.ndarray) -> np.ndarray:
    """weights (H, W) in [0, 1] -> (H, W, 3) float between two colours."""
    return colour_a[None, None] * (1.0 - weights[..., None]) + colour_b[None, None] * weights[..., None]


def noise_texture(rng, height, width):
    noise = value_noise(rng, height, width, octaves=int(rng.integers(3, 6)),
                        base_cells=int(rng.integers(2, 8)))
    return _blend(noise, random_colour(rng), random_colour(rng))


def gradient_texture(rng, height, width):
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = _blend(ramp, random_colour(rng), random_colour(rng))
    return image + 25.0 * (value_noise(rng, height, width)[..., None] - 0.5)


def stripe_texture(rng, height, width):
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 40)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (np.cos(angle) * xs + np.sin(angle) * ys) / period
    if rng.random() < 0.5:
        weights = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    else:
        weights = (np.mod(phase, 1.0) < rng.uniform(0.3, 0.7)).astype(np.float32)
    return _blend(weights.astype(np.float32), random_colour(rng), random_colour(rng))


def brick_texture(rng, height, width):
    brick_h = int(rng.integers(8, 24))
    brick_w = int(brick_h * rng.uniform(1.5, 3.0))
    mortar, brick = random_colour(rng, 120, 230), random_colour(rng, 30, 200)
    image = np.empty((height, width, 3), np.float32)
    image[:] = mortar
    for row, top in enumerate(range(0, height, brick_h)):
        shift = (brick_w // 2) * (row % 2)
        for left in range(-shift, width, brick_w):
            tint = brick * rng.uniform(0.8, 1.15)
            image[top + 1:top + brick_h - 1, max(left + 1, 0):max(left + brick_w - 1, 0)] = tint
    return image


def shapes_texture(rng, height, width, base=None):
    image = np.ascontiguousarray(base if base is not None else gradient_texture(rng, height, width),
                                 dtype=np.float32)
    for _ in range(int(rng.integers(8, 30))):
        colour = tuple(float(c) for c in random_colour(rng))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(rng.integers(4, max(6, min(height, width) // 4)))
        kind = rng.integers(0, 4)
        if kind == 0:
            cv2.circle(image, centre, size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            corner = (centre[0] + size * 2, centre[1] + int(size * rng.uniform(0.5, 2)))
            cv2.rectangle(image, centre, corner, colour, -1)
        elif kind == 2:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, centre, end, colour, int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            points = np.array(centre) + rng.integers(-size, size + 1, size=(int(rng.integers(3, 7)), 2))
            cv2.fillPoly(image, [points.astype(np.int32)], colour, cv2.LINE_AA)
    return image


TEXTURES = {
    "noise": noise_texture,
    "gradient": gradient_texture,
    "stripes": stripe_texture,
    "bricks": brick_texture,
    "shapes": shapes_texture,
}


def random_texture(rng: np.random.Generator, height: int, width: int,
                   kinds: tuple[str, ...] = tuple(TEXTURES)) -> np.ndarray:
    """(height, width, 3) uint8 BGR texture of a random kind, with mild grain."""
    kind = kinds[int(rng.integers(0, len(kinds)))]
    image = TEXTURES[kind](rng, height, width)
    if kind != "shapes" and rng.random() < 0.35:
        image = shapes_texture(rng, height, width, base=image)
    grain = rng.normal(0.0, rng.uniform(2, 8), size=(height, width, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255).astype(np.uint8)
