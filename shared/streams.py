"""Stream names of the design contract, and the consumer groups that read them."""

ITEMS = "loopwise:items"
PREDICTIONS = "loopwise:predictions"
LABELS = "loopwise:labels"
QUALITY = "loopwise:quality"
PROJECTS = "loopwise:projects"  # project settings changes (an addition to the design contract)
MODELS = "loopwise:models"  # model-trained events (an addition to the design contract)
# Prompts with candidate outputs to compare (an addition to the design contract).
COMPARISONS = "loopwise:comparisons"
DEADLETTER = "loopwise:deadletter"

# Streams without consumer groups, capped (approximately) at this many entries when
# published to; the others are trimmed behind their groups (shared.retention).
CAPPED = {DEADLETTER: 100_000, MODELS: 10_000}

# Streams with one stream a shard (shared.sharding): loopwise:predictions:{3}; the plain
# name is consumed too, for producers that know nothing of shards. Comparisons are one
# stream (a far smaller flow than predictions).
SHARDED = frozenset({ITEMS, PREDICTIONS, LABELS})

ALL = (ITEMS, PREDICTIONS, COMPARISONS, LABELS, QUALITY, PROJECTS, MODELS, DEADLETTER)


# One consumer group per (service, stream): every service sees every entry once.
GROUP_SCORER = "scorer"
GROUP_ROUTER = "router"
GROUP_LABELS = "labels"
GROUP_QUALITY = "quality"
