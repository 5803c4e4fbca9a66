"""The reporting service (the seeds' /reporting/profileStats/<n>): the most-read profiles, from
the counts the profile domain's aggregator keeps."""

from app.domain import Domain, KeyPattern
from app.reporting.router import router
from app.reporting.service import top_profiles as top_profiles

DOMAIN = Domain(
    name="reporting",
    routers=[router],
    shares_cluster_with=["profiles"],
    keys=[
        KeyPattern("{profile:events}:read-counts", "read", "the aggregator's read counts"),
        KeyPattern("profile:*", "read", "whether a counted profile still exists"),
    ],
    commands=["+zrevrange", "+exists"],
)
