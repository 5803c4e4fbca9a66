"""What the customer domain tells an operator: customers created and deleted.

There is no gauge of how many customers are stored: customers spread over every hash slot, so
the count is the sum of each slot's index (``app.records.index``), up to 16384 reads per
scrape. The difference of the two counters follows the count's changes at no cost.
"""

from __future__ import annotations

from prometheus_client import Counter

CREATED = Counter(
    "mdb_customers_created",
    "Customers created (a repeated request that finds its customer created is not counted).",
)
DELETED = Counter(
    "mdb_customers_deleted",
    "Customers deleted (a repeated request that finds its customer deleted is not counted).",
)
