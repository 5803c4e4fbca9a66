"""The live dashboard at ``/dashboard`` (placeholder: helper D builds it)."""

from __future__ import annotations

from fastapi import APIRouter

dashboard_router = APIRouter()
