"""The only package that imports a Kafka client: client settings, consumers, producers,
delivery guarantees, restore, range reads and admin, for librdkafka and kafka-python."""
