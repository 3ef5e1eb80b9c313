"""Vessels followed through the frames of a colour-Doppler cine.

Pulsatile arterial flow may fill a vessel with colour in systole only, so one frame can miss it.
Blobs are linked from frame to frame by nearest centre (within `max_shift_px`); a track that is
present in enough frames is a vessel of the clip. Its colour-area variation over the clip,
(max - min) / mean, is reported as a *colour-area pulsatility* figure: descriptive only, not a
Doppler pulsatility index and not a validated artery/vein classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from regenguide.imaging.doppler import FlowDirection, FlowResult, VesselSection


class VesselTrack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    track: int
    frames: list[int]
    persistence: float = Field(description="share of the clip's frames in which the vessel has colour")
    centroid_px: tuple[float, float]
    depth_px: float | None
    depth_mm: float | None
    diameter_px: float = Field(description="largest equal-area diameter over the clip")
    diameter_mm: float | None
    direction: FlowDirection
    colour_area_pulsatility: float


def track_vessels(results: Sequence[FlowResult], max_shift_px: float = 5.0) -> list[VesselTrack]:
    """Link vessel blobs across consecutive analysed frames (greedy nearest centre)."""
    if not results:
        return []
    tracks: list[list[tuple[int, VesselSection]]] = []
    open_tracks: list[int] = []
    for result in results:
        unmatched = list(range(len(result.vessels)))
        still_open: list[int] = []
        for t in open_tracks:
            last = tracks[t][-1][1]
            best, best_d = None, max_shift_px
            for i in unmatched:
                v = result.vessels[i]
                d = float(
                    np.hypot(v.centroid_px[0] - last.centroid_px[0], v.centroid_px[1] - last.centroid_px[1])
                )
                if d <= best_d:
                    best, best_d = i, d
            if best is not None:
                tracks[t].append((result.frame, result.vessels[best]))
                unmatched.remove(best)
                still_open.append(t)
            else:
                still_open.append(t)  # keep it open: colour may come back in the next beat
        for i in unmatched:
            tracks.append([(result.frame, result.vessels[i])])
            still_open.append(len(tracks) - 1)
        open_tracks = still_open
    out: list[VesselTrack] = []
    n = len(results)
    for index, items in enumerate(tracks):
        vs = [v for _, v in items]
        areas = np.array([v.area_px for v in vs], dtype=float)
        directions = [v.direction for v in vs]
        majority = max(set(directions), key=directions.count)
        depth_px = [v.depth_px for v in vs if v.depth_px is not None]
        depth_mm = [v.depth_mm for v in vs if v.depth_mm is not None]
        widest = max(vs, key=lambda v: v.area_px)
        out.append(
            VesselTrack(
                track=index + 1,
                frames=[f for f, _ in items],
                persistence=len(items) / n,
                centroid_px=(
                    float(np.mean([v.centroid_px[0] for v in vs])),
                    float(np.mean([v.centroid_px[1] for v in vs])),
                ),
                depth_px=float(np.mean(depth_px)) if depth_px else None,
                depth_mm=float(np.mean(depth_mm)) if depth_mm else None,
                diameter_px=widest.diameter_px,
                diameter_mm=widest.diameter_mm,
                direction=majority,
                colour_area_pulsatility=float((areas.max() - areas.min()) / areas.mean()) if n > 1 else 0.0,
            )
        )
    return out
