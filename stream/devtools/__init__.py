"""Developer tooling: the local broker, synthetic traffic, the producer, file formats and
the demo."""
