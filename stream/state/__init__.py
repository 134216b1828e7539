"""State encoding: partition snapshots (signed with the state key, authenticated before they
are unpickled) and changelog rows (validated, a bad one quarantined) to bytes and back. Reading
and writing them to Kafka is the Kafka package's job."""
