"""The pure core: features, scoring, evaluation and the pipeline that joins them.

No I/O: it imports no Kafka client, no pydantic and no HTTP code (a test checks it in a
fresh interpreter), so every decision is unit-tested without a broker.
"""
