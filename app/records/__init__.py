"""Records on Redis hashes, shared by every router that stores data in Redis.

- ``codec``: JSON scalars to hash values and back, types kept;
- ``ids``: sortable unique ids (ULIDs) that carry their record's hash slot;
- ``model``: ``HashModel``, a validated pydantic model stored as one hash under an explicit key
  prefix, with an optional unique field enforced atomically in a cluster;
- ``index``: ``SlotIndex``, a listing of every record of a kind across the shards, in pages.
"""
