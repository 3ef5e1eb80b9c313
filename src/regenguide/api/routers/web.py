"""The clinician web pages: a static single-page app served next to the API."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
STATIC = resources.files("regenguide.web") / "static"


@router.get("/")
def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")
