"""Stream names of the design contract, and the consumer groups that read them."""

ITEMS = "loopwise:items"
PREDICTIONS = "loopwise:predictions"
LABELS = "loopwise:labels"
QUALITY = "loopwise:quality"
MODELS = "loopwise:models"  # model-trained events (an addition to the design contract)
DEADLETTER = "loopwise:deadletter"

ALL = (ITEMS, PREDICTIONS, LABELS, QUALITY, MODELS, DEADLETTER)

# One consumer group per (service, stream): every service sees every entry once.
GROUP_SCORER = "scorer"
GROUP_ROUTER = "router"
GROUP_LABELS = "labels"
GROUP_QUALITY = "quality"
