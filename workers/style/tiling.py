"""Overlapping tiles with seamless blending, in bounded memory, and a seam metric to prove it.

A feed-forward style network normalises each tile with its own statistics, so two neighbouring
tiles never agree exactly where they meet: their tone differs a little and their brush strokes are
not aligned. `StripBlender` cross-fades the tone over the whole overlap and cuts the texture along
the path where the two tiles agree best, always away from the tile borders, where the network only
saw reflected padding. Finished rows leave a float32 strip (one tile high) as soon as no later tile
touches them, so the extra memory is O(tile x width), not O(image).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

SIZE_MULTIPLE = 4  # the style networks need sides divisible by 4


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets of tiles covering `length`, spread evenly so every overlap is >= `overlap`.

    Inner starts are multiples of 4, so the 4-pixel lattice the networks' upsampling leaves in their
    output lines up between neighbours; the last tile ends at `length`.
    """
    if tile <= 2 * overlap or tile - overlap <= SIZE_MULTIPLE:
        raise ValueError(f"tile ({tile}) must be more than twice the overlap ({overlap}) and larger than 8")
    if length <= tile:
        return (0,)
    # room for rounding each start to the lattice without eating into the overlap
    count = math.ceil((length - overlap - SIZE_MULTIPLE) / (tile - overlap - SIZE_MULTIPLE))
    count = max(count, 2)
    step = (length - tile) / (count - 1)
    inner = [round(i * step / SIZE_MULTIPLE) * SIZE_MULTIPLE for i in range(1, count - 1)]
    return (0, *inner, length - tile)


def _fade_in(n: int) -> np.ndarray:
    # half-pixel offsets keep every weight inside (0, 1), and fade_in + reversed fade_in == 1 exactly
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def _lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of an H x W x C float32 array, computed at 1/4 resolution (tone only, so it is enough)."""
    h, w = x.shape[:2]
    factor = max(1, min(int(sigma // 2), h, w))
    small_size = (max(1, w // factor), max(1, h // factor))
    out = np.empty_like(x)
    for c in range(x.shape[2]):
        small = Image.fromarray(np.ascontiguousarray(x[:, :, c])).resize(small_size, Image.Resampling.BOX)
        blurred = ndimage.gaussian_filter(np.asarray(small), sigma / factor, mode="nearest")
        out[:, :, c] = np.asarray(Image.fromarray(blurred).resize((w, h), Image.Resampling.BILINEAR))
    return out


def min_error_cut(error: np.ndarray, margin: int) -> np.ndarray:
    """Column of the cheapest top-to-bottom 8-connected path through `error` (h x w), one per row.

    The path keeps `margin` columns away from both sides (Efros & Freeman 2001, image quilting).
    """
    h, w = error.shape
    cost = error.astype(np.float64)
    lo, hi = min(margin, (w - 1) // 2), max(w - margin, (w + 2) // 2)
    cost[:, :lo] = np.inf
    cost[:, hi:] = np.inf
    total = cost[0].copy()
    moves = np.zeros((h, w), dtype=np.int8)
    left, right = np.full(w, np.inf), np.full(w, np.inf)
    for i in range(1, h):
        left[1:], right[:-1] = total[:-1], total[1:]
        side = np.minimum(left, right)
        moves[i] = np.where(side < total, np.where(right < left, 1, -1), 0)
        total = cost[i] + np.minimum(side, total)
    path = np.empty(h, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for i in range(h - 1, 0, -1):
        path[i - 1] = path[i] + moves[i, path[i]]
    return path


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie: tiles are `tile_h` x `tile_w`, at rows `ys` and columns `xs`."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def plan(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        """Tile an image; a side shorter than `tile` gets one tile of its own length."""
        tile -= tile % SIZE_MULTIPLE
        th, tw = min(tile, height), min(tile, width)
        return cls(height, width, th, tw, tile_starts(height, tile, overlap), tile_starts(width, tile, overlap))

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Tile shape the network sees (sides rounded up to a multiple of 4 by reflection)."""
        return (-(-self.tile_h // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-self.tile_w // SIZE_MULTIPLE) * SIZE_MULTIPLE)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def seams(self, axis: int) -> list[int]:
        """Lines (rows for axis 0, columns for axis 1) where a tile starts, ends, or two meet mid-overlap."""
        starts, extent = (self.ys, self.tile_h) if axis == 0 else (self.xs, self.tile_w)
        lines: set[int] = set()
        for prev, nxt in zip(starts, starts[1:], strict=False):
            # line i is the step from pixel i-1 to pixel i
            lines.update({nxt, prev + extent, (nxt + prev + extent) // 2})
        return sorted(lines)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] to rounded uint8, in one temporary buffer."""
    out = np.multiply(values, 255.0, dtype=np.float32)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def iter_tiles(image: np.ndarray, grid: TileGrid) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (row, column, tile) in raster order; tiles are float32 in [0, 1], padded to the network shape."""
    ph, pw = grid.padded_shape
    for r, y in enumerate(grid.ys):
        for c, x in enumerate(grid.xs):
            tile = image[y : y + grid.tile_h, x : x + grid.tile_w].astype(np.float32)
            tile *= 1.0 / 255.0
            if (ph, pw) != tile.shape[:2]:
                tile = np.pad(tile, ((0, ph - grid.tile_h), (0, pw - grid.tile_w), (0, 0)), mode="reflect")
            yield r, c, tile


def seam_blend(old: np.ndarray, new: np.ndarray, *, low_sigma: float = 8.0, feather: float = 2.0) -> np.ndarray:
    """Blend an overlap band (L x n x 3) that runs from `old` (column 0) to `new` (column n-1).

    Low frequencies cross-fade with raised-cosine weights over the whole band; the texture switches
    from old to new along the minimum-error cut, feathered by `feather` pixels, kept n/6 away from
    both band edges (where each tile only saw reflected padding). The band ends are exactly old and new.
    """
    n = old.shape[1]
    path = min_error_cut(((old - new) ** 2).sum(axis=2), n // 6)
    take = (np.arange(n)[None, :] >= path[:, None]).astype(np.float32)
    take = ndimage.gaussian_filter(take, feather, mode="nearest")[:, :, None]
    fade = _fade_in(n)[None, :, None]
    # fade * low(new) + (1 - fade) * low(old) + take * high(new) + (1 - take) * high(old), low() being linear
    return old + take * (new - old) + (fade - take) * _lowpass(new - old, low_sigma)


class StripBlender:
    """Composites stylized tiles (added in raster order) into a uint8 image, one strip of rows at a time.

    Tiles of one row are joined left to right with vertical seams into a row buffer; each finished
    row joins the image above it with one horizontal seam across the full width (`seam_blend`
    both times). Two passes avoid the corner case of per-tile quilting, where a tile's overlap
    with the row above also contains its left neighbour's unblended edge.
    """

    def __init__(self, grid: TileGrid, *, low_sigma: float = 8.0, feather: float = 2.0) -> None:
        self.grid = grid
        self.low_sigma = low_sigma
        self.feather = feather
        self.output = np.empty((grid.height, grid.width, 3), dtype=np.uint8)
        self._strip = np.zeros((grid.tile_h, grid.width, 3), dtype=np.float32)  # rows from self._top on
        self._row = np.zeros((grid.tile_h, grid.width, 3), dtype=np.float32)  # the tile row being joined
        self._top = 0
        self._added = 0

    @property
    def done(self) -> bool:
        return self._added == len(self.grid)

    def add(self, row: int, col: int, tile: np.ndarray) -> None:
        """Add the network output for tile (row, col); rows/columns beyond the tile (padding) are ignored."""
        g = self.grid
        x = g.xs[col]
        new = np.asarray(tile[: g.tile_h, : g.tile_w], dtype=np.float32)
        target = self._row[:, x : x + g.tile_w]
        left = g.xs[col - 1] + g.tile_w - x if col else 0
        if left:
            target[:, :left] = self._blend(target[:, :left], new[:, :left])
        target[:, left:] = new[:, left:]
        self._added += 1
        if col == len(g.xs) - 1:
            self._join_row(row)

    def _join_row(self, row: int) -> None:
        g = self.grid
        y = g.ys[row]
        top = g.ys[row - 1] + g.tile_h - y if row else 0
        self._flush(y)
        if top:
            # the same seam, turned on its side: bands run along the width
            old, new = self._strip[:top].swapaxes(0, 1), self._row[:top].swapaxes(0, 1)
            self._strip[:top] = self._blend(old, new).swapaxes(0, 1)
        self._strip[top:] = self._row[top:]

    def _blend(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        return seam_blend(old, new, low_sigma=self.low_sigma, feather=self.feather)

    def finish(self) -> np.ndarray:
        """The blended image (H x W x 3 uint8); every tile must have been added."""
        if not self.done:
            raise RuntimeError(f"{len(self.grid) - self._added} tiles were never added")
        self._flush(self.grid.height)
        return self.output

    def _flush(self, upto: int) -> None:
        """Rows above `upto` are final: write them out and slide the strip down."""
        n = upto - self._top
        if n <= 0:
            return
        self.output[self._top : upto] = to_uint8(self._strip[:n])
        keep = len(self._strip) - n
        if keep > 0:
            self._strip[:keep] = self._strip[n:]
        self._strip[max(keep, 0) :] = 0
        self._top = upto


def seam_energy_ratio(image: np.ndarray, tile_size: int, overlap: int, *, near: int = 4, reach: int = 32) -> float:
    """Mean squared gradient across tile seams divided by the same on nearby lines (1.0 = no seams).

    `image` is H x W x C (or H x W) at the resolution the tiles were planned on. A seam line is
    where a tile starts, ends, or two tiles meet mid-overlap; the baseline is every line `near` to
    `reach` pixels from the closest seam, so it sees the same content and texture as the seams
    do. A hard cut between stylized tiles scores about 1.3; returns 1.0 for a single tile.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    grid = TileGrid.plan(arr.shape[0], arr.shape[1], tile_size, overlap)
    seam_sum, seam_n, base_sum, base_n = 0.0, 0, 0.0, 0
    for axis in (0, 1):
        seams = grid.seams(axis)
        if not seams:
            continue
        # energy of the step from line i-1 to line i, averaged along the line
        energy = (np.diff(arr, axis=axis) ** 2).mean(axis=(1 - axis, 2))
        lines = np.arange(1, arr.shape[axis])
        dist = np.min(np.abs(lines[:, None] - np.asarray(seams)[None, :]), axis=1)
        # the networks' output has a 4-pixel lattice (nearest-neighbour upsampling): compare like with like
        base = (dist >= near) & (dist <= reach) & (dist % SIZE_MULTIPLE == 0)
        seam_sum, seam_n = seam_sum + float(energy[dist == 0].sum()), seam_n + int((dist == 0).sum())
        base_sum, base_n = base_sum + float(energy[base].sum()), base_n + int(base.sum())
    if seam_n == 0 or base_n == 0:
        return 1.0
    return (seam_sum / seam_n) / max(base_sum / base_n, 1e-12)
