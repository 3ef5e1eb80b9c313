"""Reference from a measurement, a vessel or a finding back to the image it came from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImageReference(BaseModel):
    """Which image (and where in it) a number came from; maps to a FHIR ImagingSelection."""

    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    frame: int | None = Field(default=None, ge=0, description="0-based frame index")
    stored_path: str | None = Field(default=None, description="path relative to the image store root")
    point_px: tuple[float, float] | None = Field(default=None, description="(x, y) of the structure")

    def label(self) -> str:
        parts = []
        if self.sop_instance_uid:
            parts.append(f"SOP {self.sop_instance_uid}")
        elif self.stored_path:
            parts.append(self.stored_path)
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.point_px is not None:
            parts.append(f"at ({self.point_px[0]:.0f}, {self.point_px[1]:.0f}) px")
        return ", ".join(parts) or "image not identified"
