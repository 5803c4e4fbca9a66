"""The trips' geo helpers: regions of points, longitudes across 180 degrees, search cells."""

from __future__ import annotations

import math

import pytest

from app.slots import SLOTS
from app.trips.keys import region_of, region_slot, wrap_longitude
from app.trips.schemas import Point
from app.trips.service import EARTH_RADIUS_KM, MAX_REGIONS_PER_SEARCH, regions_near


def destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """Return the point ``km`` away from (lat, lon) on a sphere of Redis's earth radius."""
    angle = km / EARTH_RADIUS_KM
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    phi2 = math.asin(
        math.sin(phi) * math.cos(angle) + math.cos(phi) * math.sin(angle) * math.cos(theta)
    )
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(angle) * math.cos(phi),
        math.cos(angle) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), math.degrees(lam2)


@pytest.mark.parametrize(
    ("lon", "wrapped"),
    [
        (0.0, 0.0),
        (-180.0, -180.0),
        (179.999, 179.999),
        (180.0, -180.0),
        (190.0, -170.0),
        (-190.0, 170.0),
        (540.0, -180.0),
    ],
)
def test_longitudes_wrap_onto_minus_180_to_180(lon: float, wrapped: float) -> None:
    assert wrap_longitude(lon) == pytest.approx(wrapped)


def test_a_longitude_in_range_is_kept_to_its_last_digit() -> None:
    lon = 12.345678901234567
    assert wrap_longitude(lon) == lon


@pytest.mark.parametrize(
    ("lat", "lon", "size", "region"),
    [
        (38.7, -9.1, 1.0, "38:-10"),
        (10.0, 180.0, 1.0, "10:-180"),  # 180 is -180
        (-0.5, -0.5, 1.0, "-1:-1"),
        (38.7, -9.1, 0.25, "154:-37"),
        (90.0, 0.0, 90.0, "1:0"),
    ],
)
def test_a_point_belongs_to_the_cell_below_and_west_of_it(
    lat: float, lon: float, size: float, region: str
) -> None:
    assert region_of(lat, lon, size) == region


def test_neighbouring_regions_spread_over_the_slots() -> None:
    slots = [region_slot(f"{lat}:{lon}") for lat in range(-5, 5) for lon in range(-5, 5)]
    assert all(0 <= slot < SLOTS for slot in slots)
    assert len(set(slots)) >= 95


@pytest.mark.parametrize(
    ("lat", "lon", "radius_km", "size"),
    [
        (38.8984, -9.1, 100, 1.0),
        (10.0, 179.995, 5, 1.0),  # across the antimeridian
        (-60.0, -179.5, 200, 1.0),
        (0.0, 0.0, 1, 0.5),
        (84.0, 30.0, 300, 5.0),  # near the pole, where cells narrow
        (-89.0, 0.0, 200, 10.0),  # around the pole
    ],
)
def test_a_search_covers_every_point_of_its_circle(
    lat: float, lon: float, radius_km: float, size: float
) -> None:
    regions = set(regions_near(Point(lat=lat, lon=lon), radius_km, size))
    for bearing in range(0, 360, 5):
        for fraction in (0.0, 0.25, 0.5, 0.75, 0.99, 1.0):
            point = destination(lat, lon, bearing, radius_km * fraction)
            assert region_of(*point, size) in regions, (bearing, fraction, point)


def test_a_search_of_too_many_regions_is_refused() -> None:
    with pytest.raises(ValueError, match="search a smaller radius"):
        regions_near(Point(lat=0, lon=0), 500, 0.1)
    assert len(regions_near(Point(lat=0, lon=0), 1, 1.0)) <= MAX_REGIONS_PER_SEARCH
