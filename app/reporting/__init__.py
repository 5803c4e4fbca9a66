"""The reporting service (the seeds' /reporting/profileStats/<n>): the most-read profiles, from
the counts the profile domain's aggregator keeps."""

from app.domain import Context, Domain, KeyPattern
from app.profiles import check_layout
from app.reporting.router import router
from app.reporting.service import top_profiles as top_profiles


async def _setup(context: Context) -> int:
    """Refuse counts spread over another number of streams than configured; hand the route
    the number of streams to merge (``request.state.reporting``)."""
    count = context.settings.profiles.event_streams
    await check_layout(context.store, count, record=False)
    return count


DOMAIN = Domain(
    name="reporting",
    routers=[router],
    shares_cluster_with=["profiles"],
    keys=[
        KeyPattern("{profile:events*}:read-counts", "read", "each event stream's read counts"),
        KeyPattern("{profile:events}:streams", "read", "how many event streams there are"),
        KeyPattern(
            "profile:*",
            "read",
            "whether a counted profile still exists; whether profile:events has data",
        ),
    ],
    commands=["+zrevrange", "+exists", "+get"],
    setup=_setup,
)
