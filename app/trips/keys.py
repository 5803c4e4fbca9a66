"""Key names of trips and drivers, with the hash-slot reasoning behind them.

Assigning a trip changes the trip, its driver and the pending indexes at once; a status change
changes the trip and frees its driver. So everything one assignment touches must share a hash
slot, and that slot is the **region's**: the map is cut into cells of ``trips.region_size_deg``
degrees, a trip belongs to the cell of its pickup, a driver to the cell they are registered in,
and every key of a region carries the region's slot tag:

- ``{<tag>}:trip:<id>``: the seed's hash per trip (created_at, requester, location, status,
  driver, car);
- ``{<tag>}:trip:<id>:doc``: the trip as one JSON document (native JSON when the server has it,
  else a JSON string that the scripts edit with cjson);
- ``{<tag>}:driver:<id>``: a driver's hash (name, car, status, trip);
- ``{<tag>}:trips:pending``: the seed's sorted set of waiting requests by request time, and
  ``{<tag>}:trips:pending:geo``: the same requests by pickup location (GEOADD).

Ids are ULIDs that carry their region's slot (``app.records.ids``), so a trip's or driver's keys
follow from the id. Each region is one slot (several small regions may share one), and regions
spread over every slot, so over every shard. ``trips:regions`` lists the slots that ever held a
pending trip, for the listings across regions.
"""

from __future__ import annotations

import math

from app.records.ids import ulid_slot
from app.slots import crc_slot, slot_tag

REGISTRY = "trips:regions"


def wrap_longitude(lon: float) -> float:
    """Return a longitude in -180 (included) to 180 (excluded): 180 is -180, as for Redis's
    geo search, which does not find a point stored at exactly 180 from across the meridian."""
    if -180.0 <= lon < 180.0:
        return lon  # as given: arithmetic would change its last digits
    return (lon + 180.0) % 360.0 - 180.0


def region_of(lat: float, lon: float, size_deg: float) -> str:
    """Return the name of the region (grid cell) holding a point."""
    return f"{math.floor(lat / size_deg)}:{math.floor(wrap_longitude(lon) / size_deg)}"


def region_slot(region: str) -> int:
    """Return the hash slot of a region's keys."""
    return crc_slot("region:" + region)


def _tag(slot: int) -> str:
    return slot_tag(slot)


def trip_key(trip_id: str) -> str:
    return f"{_tag(ulid_slot(trip_id))}:trip:{trip_id}"


def trip_doc_key(trip_id: str) -> str:
    return trip_key(trip_id) + ":doc"


def driver_key(driver_id: str) -> str:
    return f"{_tag(ulid_slot(driver_id))}:driver:{driver_id}"


def pending_key(slot: int) -> str:
    return f"{_tag(slot)}:trips:pending"


def pending_geo_key(slot: int) -> str:
    return f"{_tag(slot)}:trips:pending:geo"
