"""State encoding, pure: partition snapshots and changelog rows to bytes and back. Reading
and writing them to Kafka is the Kafka package's job."""
